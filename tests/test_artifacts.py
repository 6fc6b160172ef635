"""What a run stores is what it trained: LoRA adapters (or the fine-tuned denoiser) and a pinned
reference to the base, through ZenML's artifact store and MLflow's registry; MLflow's own diffusers
flavor opens a LoRA version as a standard pipeline; versions registered the old way still load."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drift.config import SamplerSettings, parse_config
from drift.errors import ModelNotFoundError
from drift.models import load_model
from drift.models.tiny import TINY_SD3, random_pipeline
from drift.models.trained import LORA_WEIGHTS, MANIFEST, locate_base, read_manifest
from drift.sampling.rollout import rollout
from tests.conftest import BIN, local_registry, model_versions, registry, run_pipeline

NAME = "drift-lora-sd3"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
PROMPTS = ["a red cat", "a blue dog", "a green bird", "a small house", "a tall tree", "a fast car"]


@pytest.fixture(scope="module")
def base_sd3(tmp_path_factory):
    """An SD 3-architecture pipeline whose weights dominate its bytes (a few MB: four joint blocks of
    width 128), so that a whole-pipeline copy and an adapter-only artifact differ as they do at full
    size."""
    spec = copy.deepcopy(TINY_SD3)
    spec["transformer"].update(num_layers=4, attention_head_dim=32, num_attention_heads=4, caption_projection_dim=128)
    directory = tmp_path_factory.mktemp("sd3_few_mb")
    torch.manual_seed(0)
    random_pipeline(spec, directory / "_tokenizer_src").save_pretrained(directory)
    return directory


def lora_config(base: Path, tmp_path: Path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,split\n" + "".join(f"{p},train\n{p} at noon,eval\n" for p in PROMPTS))
    return parse_config({
        "run": {"seed": 1, "output_dir": str(tmp_path / "runs")},
        "model": {"source": str(base), "height": 16, "width": 16},
        "data": {"prompts": str(prompts)},
        "sampling": {"num_steps": 2, "noise_level": 0.7, "group_size": 2, "prompts_per_iteration": 2},
        "reward": [{"name": "jpeg_incompressibility"}],
        "train": {"iterations": 1, "lr": 1e-3, "micro_batch": 4, "clip_range": 0.2,
                  "lora": {"enabled": True, "rank": 4, "alpha": 8}},
        "eval": {"every": 0, "num_prompts": 2, "samples_per_prompt": 2, "noise_level": 0.0},
        "registry": {"model_name": NAME},
    })


def weight_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def files_added(root: Path, before: set[Path]) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*")
                  if p.is_file() and p not in before)


@pytest.fixture(scope="module")
def lora_run(base_sd3, zen_env, tmp_path_factory):
    """The training pipeline on the few-MB SD 3 with LoRA, once for the module's checks."""
    tmp_path = tmp_path_factory.mktemp("lora_run")
    state = zen_env["home"] / "state"
    before = {p for p in state.rglob("*") if p.is_file()}
    cfg = lora_config(base_sd3, tmp_path)
    result = run_pipeline(zen_env, cfg, tmp_path, "lora-sd3")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"cfg": cfg, "state": state, "added": files_added(state, before), "tmp": tmp_path}


def test_a_lora_run_stores_and_registers_its_adapters_not_the_pipeline(lora_run, zen_env, base_sd3, capsys):
    state = lora_run["state"]
    [artifact] = [p.parent for p in (state / "artifacts" / "drift_finetune").rglob(MANIFEST)]
    adapters = (artifact / LORA_WEIGHTS).stat().st_size
    client = registry(zen_env)
    [version] = model_versions(client, NAME)
    import mlflow

    registered = Path(mlflow.artifacts.download_artifacts(client.get_model_version_download_uri(NAME, version.version),
                                                          dst_path=str(lora_run["tmp"] / "registered"),
                                                          tracking_uri=zen_env["tracking_uri"]))
    whole = weight_bytes(base_sd3)
    stored = {"artifact store (model artifact)": weight_bytes(artifact), "MLflow (registered version)":
              weight_bytes(registered)}
    with capsys.disabled():
        print(f"\nadapters {adapters} B; the base pipeline's weights {whole} B ({whole / adapters:.0f}x)")
        for where, size in stored.items():
            print(f"  {where}: model-bearing files {size} B ({size / adapters:.2f}x the adapters)")
        print("  every other file the run added (drift-bases/: the local base, stored once per content digest):")
        for name, size in lora_run["added"]:
            if not (state / name).is_relative_to(artifact) and not name.endswith(LORA_WEIGHTS):
                print(f"    {size:>9} B  {name}")
    assert all(size <= 1.2 * adapters for size in stored.values()), stored
    assert whole > 50 * adapters  # the comparison means something: the whole pipeline is far larger
    manifest = read_manifest(artifact)
    assert manifest.trained == "lora" and manifest.base.digest and not Path(manifest.base.source).is_absolute()


def test_mlflow_diffusers_loads_the_champion_as_a_pipeline_that_samples_as_the_project_does(lora_run, zen_env,
                                                                                          base_sd3):
    import mlflow.diffusers

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(zen_env["tracking_uri"])
    try:
        flavor = mlflow.diffusers.load_model(f"models:/{NAME}@champion")
        pipe = flavor.load_pipeline(base_model=str(base_sd3), text_encoder_3=None, tokenizer_3=None,
                                    torch_dtype=torch.float32, device="cpu")
        from mlops.model_registry import download_generator

        registered = download_generator(zen_env["tracking_uri"], NAME, "1", lora_run["tmp"] / "project")
    finally:
        mlflow.set_tracking_uri(previous)
    sampler = registered.sampler
    model = load_model(str(registered.model_dir), base=str(base_sd3), **sampler.model_options.model_dump())
    ours = rollout(model, ["a red cat", "a tall tree"], 1, torch.tensor([3, 4]), sampler.num_steps, 0.0)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt=ours.prompts, latents=ours.latents[:, 0], num_inference_steps=sampler.num_steps,
                  guidance_scale=sampler.guidance_scale, height=16, width=16, output_type="latent").images
    torch.testing.assert_close(theirs, ours.latents[:, -1], rtol=0, atol=1e-5)


def test_the_registered_generator_draws_in_a_fresh_process(lora_run, zen_env, base_sd3):
    code = ("import sys, mlflow, pandas as pd; "
            "m = mlflow.pyfunc.load_model(sys.argv[1], model_config={'base_model': sys.argv[2]}); "
            "out = m.predict(pd.DataFrame({'prompt': ['a red cat', 'a blue dog'], 'seed': [1, 2]})); "
            "print('images', len(out), min(len(s) for s in out['image_png_base64']))")
    env = {**os.environ, "MLFLOW_TRACKING_URI": zen_env["tracking_uri"], "PATH": f"{BIN}:{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-c", code, f"models:/{NAME}@champion", str(base_sd3)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=lora_run["tmp"])
    assert done.returncode == 0, done.stderr[-3000:]
    count, shortest = done.stdout.split()[-2:]
    assert count == "2" and int(shortest) > 50


def test_a_base_changed_after_training_is_refused_naming_both_digests(lora_run, base_sd3, tmp_path):
    [artifact] = [p.parent for p in (lora_run["state"] / "artifacts" / "drift_finetune").rglob(MANIFEST)]
    expected = read_manifest(artifact).base
    changed = tmp_path / "base"
    import shutil

    shutil.copytree(base_sd3, changed)
    config = changed / "transformer" / "config.json"
    config.write_text(config.read_text().replace('"num_layers": 4', '"num_layers": 4 '))
    # what the registration step checks before it registers anything
    with pytest.raises(ModelNotFoundError, match=f"(?s)expected .*{expected.digest}.*found .*{changed}"):
        locate_base(expected, str(changed))


def test_a_version_registered_the_old_way_is_evaluated_again(base_sd3, tmp_path):
    """Versions registered before adapters were stored hold the whole pipeline ('pipeline'); the
    champion's re-evaluation (and drift label, through the same download) still opens them."""
    from mlops.model_registry import register_version
    from mlops.pyfunc_model import GENERATOR_CODE
    from mlops.version_scores import scores_under_protocol

    cfg = lora_config(base_sd3, tmp_path)
    sampling = tmp_path / "sampling.json"
    sampling.write_text(SamplerSettings(num_steps=2, noise_level=0.0).model_dump_json())
    with local_registry(tmp_path, "old-way") as (uri, client):
        number = register_version("old-gen", GENERATOR_CODE, {"pipeline": str(base_sd3), "sampling": str(sampling)}, {})
        scores, evaluated = scores_under_protocol(uri, client.get_model_version("old-gen", number), cfg, None,
                                                  "new-protocol")
    assert evaluated and torch.isfinite(torch.tensor(scores.figures()["alignment"]))


def test_checkpoints_of_a_lora_run_hold_the_adapters_and_their_optimizer_state_only(tiny_sd3_dir, tmp_path):
    from drift.training.checkpoints import load_checkpoint
    from tests.test_trainer import make_trainer

    trainer = make_trainer(tiny_sd3_dir, lora=True, iterations=1)
    trainer.step()
    ckpt = load_checkpoint(trainer.save_checkpoint(tmp_path / "iter_000001"))
    trained = {n for n, p in trainer.model.denoiser.named_parameters() if p.requires_grad}
    assert ckpt.weights and all("lora" in key for key in ckpt.weights)
    assert sum(t.numel() for t in ckpt.weights.values()) == sum(
        p.numel() for n, p in trainer.model.denoiser.named_parameters() if n in trained)
    moments = ckpt.state["optimizer"]["state"]
    assert set(moments) <= {n.replace(".default", "") for n in trained} | trained


def test_a_hub_base_is_pinned_to_the_revision_it_was_trained_on(tiny_sd3_dir, tmp_path, monkeypatch):
    """A hub id is referenced with the commit it was loaded at (read from the local cache, offline),
    and a trained model loads on that commit even after the hub's main branch moved; without that
    commit in the cache, the message names it and the commits the cache holds."""
    import shutil

    import huggingface_hub.constants

    from drift.models.trained import reference_base
    from tests.test_trainer import make_trainer

    repo = tmp_path / "hub" / "models--drift-test--tiny-sd3"
    trained_on, later = "a" * 40, "b" * 40
    shutil.copytree(tiny_sd3_dir, repo / "snapshots" / trained_on)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(trained_on)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    trainer = make_trainer("drift-test/tiny-sd3", lora=True, iterations=1)
    trainer.step()
    base = reference_base("drift-test/tiny-sd3")
    assert (base.source, base.revision, base.digest) == ("drift-test/tiny-sd3", trained_on, None)
    trainer.save_model(tmp_path / "model", base)

    shutil.copytree(repo / "snapshots" / trained_on, repo / "snapshots" / later)
    scheduler = repo / "snapshots" / later / "scheduler" / "scheduler_config.json"
    scheduler.write_text(scheduler.read_text().replace('"shift": 3.0', '"shift": 1.5'))
    (repo / "refs" / "main").write_text(later)
    assert load_model("drift-test/tiny-sd3", height=16, width=16).pipe.scheduler.config.shift == 1.5  # main moved
    model = load_model(str(tmp_path / "model"), height=16, width=16)
    assert model.pipe.scheduler.config.shift == 3.0  # the commit it was trained on, not main's
    shutil.rmtree(repo / "snapshots" / trained_on)
    with pytest.raises(ModelNotFoundError, match=f"revision {trained_on} of drift-test/tiny-sd3 is needed.*{later}"):
        load_model(str(tmp_path / "model"), height=16, width=16)

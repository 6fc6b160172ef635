"""Two CPU processes under accelerate (DDP over gloo) against one: the same group statistics and,
after updates, the same weights within float tolerance, with processes that keep different
numbers of samples after the subset and hold none of some micro-batches; resume across
1 -> 2 processes; and the pipeline's fine-tuning step launched on 2 processes through ZenML."""

import os
import subprocess

import pytest
import torch
import yaml
from safetensors.torch import load_file

from drift.training.run import METRICS_LOG, read_metrics_log
from tests.conftest import BIN, model_versions, registry, run_pipeline, small_config
from tests.test_trainer import DRIFT_ON, make_config

GROUP_STATISTICS = ("reward_mean", "reward_std", "kept_fraction", "diversity", "vendi")
LAUNCH_2 = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "drift.cli"]


@pytest.fixture(scope="module")
def run_config(tiny_sd15_dir, tmp_path_factory):
    """One prompt group of 4 per iteration, 3 of them kept (window subset), micro-batches of one
    sample: each iteration one process keeps 2 samples and the other 1, and every micro-batch is
    held by a single process, the other taking a zero-weight pass."""
    root = tmp_path_factory.mktemp("distributed")
    prompts = root / "prompts.csv"
    prompts.write_text("prompt,split\n" + "".join(f"{p},train\n{p} again,eval\n"
                                                  for p in ("a red cat", "a blue dog", "a green bird")))
    cfg = make_config(tiny_sd15_dir, drift=DRIFT_ON, iterations=3, micro_batch=1, grad_accum=2, kl_coef=0.01)
    cfg = cfg.with_overrides({"data.prompts": str(prompts), "sampling.prompts_per_iteration": 1,
                              "checkpoint.every": 1, "checkpoint.keep_last": 0})

    def write(name, **overrides):
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg.with_overrides(overrides).model_dump(mode="json")))
        return path

    return write


def _train(config, out, processes, *extra):
    launcher = LAUNCH_2 if processes == 2 else [str(BIN / "drift")]
    cmd = launcher + ["train", "-c", str(config), "--out", str(out), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _weights(out):
    return load_file(next((out / "model" / "unet").glob("*.safetensors")))


def _statistics(out):
    return [r for r in read_metrics_log(out / METRICS_LOG) if "reward_mean" in r]


def test_two_processes_give_the_statistics_and_weights_of_one_and_resume_across_counts(run_config, tiny_sd15_dir,
                                                                                       tmp_path):
    config = run_config("three")
    _train(config, tmp_path / "one", 1)
    _train(config, tmp_path / "two", 2)
    one, two = _statistics(tmp_path / "one"), _statistics(tmp_path / "two")
    assert [r["iteration"] for r in two] == [1, 2, 3] and {r["processes"] for r in two} == {2}
    assert one[0]["kept_fraction"] == 0.75
    for a, b in zip(one, two):
        for key in GROUP_STATISTICS:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["iteration"], key)
    for key in GROUP_STATISTICS:  # before any update the rollouts are the same samples
        assert two[0][key] == pytest.approx(one[0][key], rel=1e-6, abs=1e-7), key
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    base = load_file(next((tiny_sd15_dir / "unet").glob("*.safetensors")))
    assert any(not torch.equal(w1[k], base[k]) for k in base), "the updates moved nothing"
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-3, atol=1e-5)

    # Two iterations on one process, the third on two: the weights of three on one.
    _train(run_config("two_iterations", **{"train.iterations": 2}), tmp_path / "resumed", 1)
    result = _train(config, tmp_path / "resumed", 2, "--resume")
    assert "resuming from" in result.stdout and "iter_000002" in result.stdout
    resumed = _weights(tmp_path / "resumed")
    for name in w1:
        torch.testing.assert_close(resumed[name], w1[name], rtol=1e-3, atol=1e-5)
    assert [(r["iteration"], r["processes"]) for r in _statistics(tmp_path / "resumed")] == [(1, 1), (2, 1), (3, 2)]


def test_the_pipeline_fine_tunes_on_two_processes(testbed, zen_env, tmp_path):
    from drift.build import build_parts
    from drift.training.run import run_training

    base = {"train.iterations": 2, "eval.every": 1, "registry.model_name": "drift-two-processes",
            "run.output_dir": str(tmp_path / "runs"), "sampling.prompts_per_iteration": 3,
            "eval.num_prompts": 3, "train.micro_batch": 5}
    result = run_pipeline(zen_env, small_config(testbed, **base, **{"accelerate.num_processes": 2}), tmp_path, "two")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = registry(zen_env)
    [version] = model_versions(client, "drift-two-processes")
    history = {key: [m.value for m in sorted(client.get_metric_history(version.run_id, key), key=lambda m: m.step)]
               for key in GROUP_STATISTICS}
    run_data = client.get_run(version.run_id).data
    assert run_data.params["processes"] == "2" and run_data.metrics["processes"] == 2

    single = small_config(testbed, **base)
    run = run_training(single, tmp_path / "single", build_parts(single), progress=False)
    logged = _statistics(tmp_path / "single")
    for key in GROUP_STATISTICS:
        assert history[key] == pytest.approx([r[key] for r in logged], rel=1e-4, abs=1e-6), key
    from mlops.model_registry import download_generator

    registered = download_generator(zen_env["tracking_uri"], "drift-two-processes", version.version, tmp_path / "dl")
    weights = load_file(next((registered.model_dir / "unet").glob("*.safetensors")))
    trained = run.trainer.model.denoiser.state_dict()
    base_weights = load_file(next((testbed["root"] / "base_model" / "unet").glob("*.safetensors")))
    # Equal to float tolerance relative to what training moved: Adam's normalised steps can turn a
    # rounding difference in a near-zero gradient into a step of lr, so elementwise bounds do not fit.
    gap = sum(float((weights[n] - trained[n]).pow(2).sum()) for n in weights) ** 0.5
    moved = sum(float((trained[n] - base_weights[n]).pow(2).sum()) for n in weights) ** 0.5
    assert moved > 0 and gap < 1e-3 * moved, (gap, moved)

"""`drift bench gpu`: the tiny scale end to end on the CPU as a GPU machine runs it (no install, no
MLOps stack), the full-size architectures' shapes on the meta device, the micro-batch search."""

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MLOPS = ("mlflow", "zenml", "open_clip", "great_expectations")

# `python -m drift.cli ARGS`, then which MLOps packages that path imported.
AS_MODULE = f"""
import runpy, sys
sys.argv = ["drift.cli", *sys.argv[1:]]
try:
    runpy.run_module("drift.cli", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
print("MLOPS_MODULES=" + ",".join(sorted({{m.split(".")[0] for m in sys.modules}} & set({MLOPS!r}))))
sys.exit(code)
"""


def test_tiny_scale_runs_every_phase_from_the_source_tree_without_the_mlops_stack(tmp_path):
    from drift.config import load_config

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", AS_MODULE, "bench", "gpu", "--scale", "tiny", "--out", str(tmp_path),
                          "--max-micro-batch", "4"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "MLOPS_MODULES=\n" in out.stdout, out.stdout[-500:]
    result = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert result["scale"] == "tiny" and result["machine"]["device"] == "cpu"
    assert set(result["models"]) == {"sd35m", "flux-dev"}
    for name, config in (("sd35m", "sd35m_pickscore.yaml"), ("flux-dev", "flux_dev_pickscore.yaml")):
        cfg = load_config(ROOT / "configs" / config)
        r = result["models"][name]
        ro, up, fit = r["rollout"], r["update"], r["fit"]
        assert (ro["images"], ro["steps"], ro["batch_size"]) == (cfg.sampling.group_size, cfg.sampling.num_steps,
                                                                 cfg.sampling.batch_size)
        assert ro["seconds"] > 0 and ro["pipeline_seconds"] > 0 and math.isfinite(ro["ratio_to_pipeline"])
        assert r["out_of_memory"] is None
        assert ro["peak_memory_gib"] is None and up["peak_memory_gib"] is None  # not measured on the CPU
        # the shipped LoRA, micro-batch and SDE window: every kept sample trained on the window's steps
        assert r["parameters"]["trained"] > 0 and up["micro_batch"] == cfg.train.micro_batch
        assert up["trained_sample_steps"] == up["kept_samples"] * cfg.sampling.sde_window.size
        assert up["ratios_before_first_step"] and up["ratio_max_abs_dev"] < 1e-3
        assert up["grad_norm"] > 0 and up["seconds_per_sample_step"] > 0
        assert fit["stopped"] == "limit" and fit["largest_fitting"] == 4
        assert [p["micro_batch"] for p in fit["probes"]][0] == cfg.train.micro_batch
        assert r["parameters"]["text_encoders_built"] < r["parameters"]["text_encoders_published"]
    table = (tmp_path / "bench_gpu.md").read_text()
    assert "| | SD 3.5 Medium | FLUX.1-dev |" in table and "rollout / pipeline" in table
    assert table in out.stdout


@pytest.mark.parametrize("name", ["sd35m", "flux-dev"])
def test_full_size_architectures_fit_together_at_512_px(name):
    """The published configs build, and their text encoders give the denoiser the shapes it takes,
    with no memory allocated (the meta device): the GPU run cannot fail on a shape."""
    from drift.bench.gpu import load_spec
    from drift.models import wrap_pipeline
    from drift.models.tiny import random_pipeline

    spec = load_spec(name)
    arch = spec["scales"]["full"]["architecture"]
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        pipe = random_pipeline(arch, tokenizer_dir, "meta", torch.bfloat16, spec["text_encoder_layers"])
    model = wrap_pipeline(pipe, "flow", "meta", torch.bfloat16, height=512, width=512)
    cond = model.encode(["a red fox", "two cups"])
    t = arch["transformer"]
    text_tokens = arch["t5_tokens"] + (arch["clip_tokens"] if name == "sd35m" else 0)
    assert cond.embeds.shape == (2, text_tokens, t["joint_attention_dim"])
    assert cond.pooled.shape == (2, t["pooled_projection_dim"])
    x = torch.zeros(2, *model.latent_shape, device="meta")
    assert model.predict(x, model.schedule(4).model_time(0), cond).shape == x.shape
    assert model.latent_shape == ((16, 64, 64) if name == "sd35m" else (1024, 64))
    billions = sum(p.numel() for p in model.denoiser.parameters()) / 1e9
    assert (2.0 < billions < 2.6) if name == "sd35m" else (11.5 < billions < 12.5)  # published: 2.5B, 12B


def _probe(threshold: int, base: float = 2.0, per_sample: float = 0.5, calls: list | None = None):
    def probe(m: int):
        if calls is not None:
            calls.append(m)
        return m <= threshold, (base + per_sample * m if m <= threshold else None)
    return probe


@pytest.mark.parametrize("threshold", [1, 7, 100, 1000])
def test_search_brackets_the_largest_fitting_micro_batch_by_doubling_and_bisection(threshold):
    from drift.bench.gpu import search_largest

    r = search_largest(_probe(threshold), start=4, limit=4096)
    lo, hi = r["largest_fitting"], r["smallest_failing"]
    assert r["stopped"] == "bracketed" and lo <= threshold < hi and hi - lo <= max(1, lo // 8)
    assert [p["fits"] for p in r["probes"]] == [p["micro_batch"] <= threshold for p in r["probes"]]


def test_search_goes_to_the_memory_extrapolation_and_stops_within_an_eighth():
    from drift.bench.gpu import search_largest

    # peak = 2 + 0.5 m GiB: with 100 GiB, m = 196 fits; 95% of it extrapolates to m = 186.
    calls = []
    r = search_largest(_probe(196, calls=calls), start=4, limit=4096, capacity=100.0)
    assert calls[:3] == [4, 8, 186] and len(calls) == 4 and r["extrapolated"] == 186
    assert r["largest_fitting"] <= 196 < r["smallest_failing"]


def test_search_reports_nothing_fits_the_limit_and_the_time_budget():
    from drift.bench.gpu import search_largest

    assert search_largest(_probe(0), start=4, limit=64)["stopped"] == "nothing fits"
    r = search_largest(_probe(10**6), start=4, limit=64)
    assert (r["stopped"], r["largest_fitting"], r["smallest_failing"]) == ("limit", 64, None)
    calls = []
    r = search_largest(_probe(100, calls=calls), start=4, limit=4096, affordable=lambda m: m < 20)
    assert (r["stopped"], r["largest_fitting"], calls) == ("time budget", 16, [4, 8, 16])
    r = search_largest(_probe(196), start=4, limit=4096, capacity=100.0, affordable=lambda m: m < 20)
    assert (r["stopped"], r["largest_fitting"], r["extrapolated"]) == ("time budget", 8, 186)


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda:99"], "--device cuda:99"),
    (["--scale", "tiny", "--resolution", "40"], "--resolution must be a positive multiple of 16"),
])
def test_cli_refuses_a_missing_device_and_a_bad_resolution_in_one_line(tmp_path, capsys, args, message):
    from drift.cli import main

    assert main(["bench", "gpu", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("drift: error: ") and message in err and len(err.strip().splitlines()) == 1

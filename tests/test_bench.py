"""A smoke configuration of the Pareto benchmark: every method of the committed config, tiny budget."""

import json
import math

import pytest
import yaml

from drift.bench.pareto import load_bench_config, run_benchmark
from drift.errors import ConfigError
from tests.conftest import ROOT


def test_pareto_benchmark_smoke(testbed, tmp_path):
    root = testbed["root"]
    clf = {"checkpoint": str(root / "classifier")}
    committed = yaml.safe_load((ROOT / "configs/bench/digits_pareto.yaml").read_text())
    smoke = {**committed, "base_config": str(ROOT / "configs/digits.yaml"), "iterations": 2, "eval_every": 1,
             "base_overrides": {"model.source": str(root / "base_model"), "data.prompts": str(testbed["prompts"]),
                                "reward": [{"name": "digit_margin", "args": clf}],
                                "embedding": {"name": "digit_features", "args": clf},
                                "sampling.group_size": 4, "sampling.prompts_per_iteration": 3,
                                "eval.num_prompts": 3, "eval.samples_per_prompt": 4}}
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(smoke))
    bench, base = load_bench_config(path)
    result = run_benchmark(bench, base, seeds=2, out_dir=tmp_path / "out", progress=False)

    assert set(result["trajectories"]) == set(committed["methods"])
    for runs in result["trajectories"].values():
        assert sorted(runs) == [0, 1] and all(len(t) == 3 for t in runs.values())
    rows = {r["method"]: r for r in result["analysis"]["table"]}
    self_gain = rows["grpo"]["diversity_gain_at_matched_alignment"]["mean"]
    assert self_gain == 0.0 or math.isnan(self_gain)  # the baseline against itself
    for name in ("table.md", "table.csv", "pareto.png", "trajectories.json", "summary.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "drift_without_shaping" in (tmp_path / "out" / "table.md").read_text()
    assert json.loads((tmp_path / "out" / "trajectories.json").read_text())["grpo"]["0"][0]["iteration"] == 0


def test_a_typo_in_a_method_fails_before_training(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"base_config": str(ROOT / "configs/digits.yaml"), "methods": {
        "grpo": {"drift.subset.enabled": False}, "drift": {"drift.shaping.wieght": 2}}}))
    with pytest.raises(ConfigError, match="(?s)method .drift.*wieght"):
        load_bench_config(path)

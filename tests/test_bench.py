"""The benchmarks: smoke runs of the committed configs on a tiny budget, seeds, reach levels, the prompt-noise probe."""

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from drift.bench.common import parse_seeds
from drift.bench.pareto import _run_key, compare, run_benchmark
from drift.config import load_bench_config
from drift.errors import ConfigError
from tests.conftest import ROOT


def smoke_config(testbed, tmp_path, committed: dict, prompts: int, **fields) -> Path:
    """A committed benchmark config on the small testbed with a tiny budget, written to a file."""
    root = testbed["root"]
    clf = {"checkpoint": str(root / "classifier")}
    smoke = {**committed, "base_config": str(ROOT / "configs/digits.yaml"), "iterations": 2, "eval_every": 1, **fields,
             "base_overrides": {"model.source": str(root / "base_model"), "data.prompts": str(testbed["prompts"]),
                                "reward": [{"name": "digit_margin", "args": clf}],
                                "embedding": {"name": "digit_encoder", "args": {"checkpoint": str(root / "encoder")}},
                                "drift.shaping.embedding.args": clf, "eval.embeddings.classifier.args": clf,
                                "eval.coverage.args.images": str(testbed["images"]),
                                "sampling.group_size": 4, "sampling.prompts_per_iteration": prompts,
                                "eval.num_prompts": prompts, "eval.samples_per_prompt": 4}}
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(smoke))
    return path


def test_pareto_benchmark_smoke(testbed, tmp_path):
    committed = yaml.safe_load((ROOT / "configs/bench/digits_pareto.yaml").read_text())
    bench, base = load_bench_config(smoke_config(testbed, tmp_path, committed, 3, max_iterations=3))
    result = run_benchmark(bench, base, seeds=[5, 7], out_dir=tmp_path / "out", progress=False)

    assert set(result["trajectories"]) == set(committed["methods"])
    for name, runs in result["trajectories"].items():
        assert sorted(runs) == [5, 7]
        for seed, t in runs.items():
            # the budget of 2 iterations, then on to the baseline's final alignment or the cap of 3
            final = result["trajectories"]["grpo"][seed][2]["alignment"]
            assert len(t) == 3 or (name != "grpo" and len(t) == 4 and t[2]["alignment"] < final)
            assert {"precision", "recall", "frechet"} <= set(t[0])
    rows = {r["method"]: r for r in result["analysis"]["table"]}
    self_gain = rows["grpo"]["diversity_gain_at_matched_alignment"]["mean"]
    assert self_gain == 0.0 or math.isnan(self_gain)  # the baseline against itself
    assert rows["grpo"]["diversity_ratio_at_100"]["per_seed"] == [1.0, 1.0]
    for name in ("table.md", "table.csv", "pareto.png", "trajectories.json", "summary.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    table = (tmp_path / "out" / "table.md").read_text()
    assert "drift_without_shaping" in table and "Seeds 5, 7" in table and "final recall" in table
    # measured in the evaluation encoder, and beside it in the classifier's features (which shaped) and pixels
    assert "measured in digit_encoder" in table and "drift: digit_features, " in table and "grpo: off" in table
    assert "The same runs measured in classifier (digit_features)" in table and "| pixels diversity x grpo |" in table
    assert {"classifier/diversity_gain_at_matched_alignment", "pixels/final_recall",
            "pixels/diversity_ratio_at_90"} <= set(rows["drift"])
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["seeds"] == [5, 7]
    assert json.loads((tmp_path / "out" / "trajectories.json").read_text())["grpo"]["5"][0]["iteration"] == 0
    # an interrupted or repeated benchmark reuses the runs it recorded, unless their configuration changed
    again = run_benchmark(bench, base, seeds=[5, 7], out_dir=tmp_path / "out", progress=False, resume=True)
    assert again["trajectories"] == result["trajectories"] and again["wall_seconds"] < 0.5 * result["wall_seconds"]
    # the same runs trained two at a time in worker processes (one torch thread each)
    parallel = run_benchmark(bench, base, seeds=[5], out_dir=tmp_path / "parallel", progress=False, workers=2)
    for name, runs in parallel["trajectories"].items():
        for a, b in zip(runs[5], result["trajectories"][name][5], strict=True):
            assert a == pytest.approx(b, rel=1e-3, abs=1e-4), name
    assert "2 workers" in parallel["machine"]
    changed = base.with_overrides({"drift.shaping.weight": 0.5})
    changed_key = _run_key(bench.run_config(changed, "drift", 5), None, bench)
    assert changed_key != _run_key(bench.run_config(base, "drift", 5), None, bench)
    # a retrained base model at the same path is another run too
    model = tmp_path / "model"
    shutil.copytree(testbed["root"] / "base_model", model)
    moved = bench.run_config(base.with_overrides({"model.source": str(model)}), "drift", 5)
    before = _run_key(moved, None, bench)
    (model / "pretrain_stats.json").write_text("{}")
    assert _run_key(moved, None, bench) != before


def test_resuming_a_benchmark_whose_baseline_phase_is_recorded(testbed, tmp_path, capsys):
    committed = yaml.safe_load((ROOT / "configs/bench/digits_pareto.yaml").read_text())
    committed["methods"] = {k: committed["methods"][k] for k in ("grpo", "drift")}
    bench, base = load_bench_config(smoke_config(testbed, tmp_path, committed, 2, iterations=1, max_iterations=None))
    out = tmp_path / "out"
    first = run_benchmark(bench, base, seeds=[5], out_dir=out, progress=False)
    baseline = json.loads((out / "runs.json").read_text())["grpo/seed5"]
    for workers in (1, 2):
        (out / "runs.json").write_text(json.dumps({"grpo/seed5": baseline}))  # interrupted after the first phase
        again = run_benchmark(bench, base, seeds=[5], out_dir=out, resume=True, workers=workers)
        assert json.loads((out / "runs.json").read_text())["grpo/seed5"] == baseline  # reused, not trained again
        for a, b in zip(again["trajectories"]["drift"][5], first["trajectories"]["drift"][5], strict=True):
            assert a == pytest.approx(b, rel=1e-3, abs=1e-4)
        # progress lines (stderr is not a terminal here); with two workers the run's start and its
        # iterations are reported from the worker process
        err = capsys.readouterr().err
        assert "reusing grpo/seed5" in err and "drift/seed5 started" in err and "drift/seed5 done in" in err
        assert "runs 2/2 done, iterations 1/1, about 00:00 left" in err


def test_progress_shows_runs_iterations_and_the_time_left():
    import io

    from drift.bench.common import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream in (io.StringIO(), Terminal()):
        shown = Progress({"grpo/seed0": 4, "drift/seed0": 4}, every=0, stream=stream)
        shown.reuse("grpo/seed0")  # recorded earlier: done, and out of the work left
        shown.advance("drift/seed0", 0)
        shown.advance("drift/seed0", 2)
        if isinstance(stream, Terminal):  # a bar, redrawn in place
            assert "\r" in stream.getvalue() and "runs 1/2:  50%" in stream.getvalue()
            assert "2/4 [" in stream.getvalue() and "drift/seed0 at 2" in stream.getvalue()
        else:  # a line per change here (every=0)
            assert "runs 1/2 done, iterations 2/4, about 00:00 left; running drift/seed0 at 2\n" in stream.getvalue()
        shown.advance("drift/seed0", 6)  # trained on past its budget: the total grows
        shown.finish("drift/seed0", 1.0)
        shown.close()
        text = stream.getvalue()
        assert "drift/seed0 started" in text and "drift/seed0 done in 1 s" in text
        assert ("runs 2/2: 100%" in text and "6/6 [" in text) if isinstance(stream, Terminal) else \
            text.endswith("runs 2/2 done, iterations 6/6, about 00:00 left\n")


def test_seeds_are_a_count_or_a_list():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("100,101,102") == [100, 101, 102]
    assert parse_seeds("100,") == [100]
    for bad in ("0", "1,1", "a,b", "-1,2"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def _trajectory(alignments, diversities, recalls):
    return [{"iteration": 5 * i, "alignment": a, "diversity": d, "vendi": 1.0, "precision": 1.0, "recall": r,
             "frechet": 1.0} for i, (a, d, r) in enumerate(zip(alignments, diversities, recalls))]


def test_reach_levels_and_gains_over_the_base_model():
    grpo = _trajectory([5, 7, 9, 11], [0.08, 0.05, 0.03, 0.01], [0.8, 0.6, 0.4, 0.2])
    # slower: 10 at the budget (iteration 15), 11 only at iteration 20, trained on past the budget
    method = _trajectory([5, 8, 9, 10, 12], [0.08, 0.08, 0.07, 0.06, 0.04], [0.8, 0.8, 0.7, 0.6, 0.4])
    row = compare(method, grpo, iterations=15, levels=3, fractions=[0.9, 1.0])
    assert row["final_alignment"] == 10 and row["final_recall"] == 0.6
    assert row["iterations_to_90"] == pytest.approx(5 * (2 + (9.9 - 9) / 1))
    assert row["iterations_to_100"] == pytest.approx(17.5)
    assert row["diversity_at_100"] == pytest.approx(0.05)
    assert row["diversity_ratio_at_100"] == pytest.approx(0.05 / 0.01)
    assert row["recall_ratio_at_100"] == pytest.approx(0.5 / 0.2)
    # at matched diversity 0.06 the method has alignment 10, GRPO 7 + 2 * (0.05 - 0.06) / (0.05 - 0.03) ...
    assert row["alignment_improvement_gain_at_matched_diversity"] > row["alignment_gain_at_matched_diversity"] > 0


def test_a_level_is_reached_where_the_measured_alignment_first_crosses_it():
    from drift.bench.common import reach

    run = [{"iteration": 10 * i, "alignment": a, "diversity": d}
           for i, (a, d) in enumerate(zip([5, 8, 6, 9], [0.4, 0.3, 0.2, 0.1]))]
    keys = ("iteration", "diversity")
    # after the dip, between the neighbours 6 and 9 (not from the earlier peak 8)
    assert reach(run, 8.5, keys) == pytest.approx({"iteration": 20 + 10 * 2.5 / 3, "diversity": 0.2 - 0.1 * 2.5 / 3})
    assert reach(run, 8, keys) == {"iteration": 10, "diversity": 0.3}
    assert reach(run, 4, keys) == {"iteration": 0, "diversity": 0.4}  # there from the start
    assert all(math.isnan(v) for v in reach(run, 9.5, keys).values())


def test_a_typo_in_a_method_fails_before_training(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"base_config": str(ROOT / "configs/digits.yaml"), "methods": {
        "grpo": {"drift.subset.enabled": False}, "drift": {"drift.shaping.wieght": 2}}}))
    with pytest.raises(ConfigError, match="(?s)method .drift.*wieght"):
        load_bench_config(path)
    # each benchmark takes only its own fields, and names a timed method it has
    from drift.config import EfficiencyBenchConfig

    for field, message in (({"max_iterations": 80}, "max_iterations: Extra inputs are not permitted"),
                           ({"timing_method": "drift_window"},
                            "timing_method 'drift_window' is not one of the methods")):
        path.write_text(yaml.safe_dump({"base_config": str(ROOT / "configs/digits.yaml"), **field,
                                        "methods": {"grpo": {}, "drift": {}}}))
        with pytest.raises(ConfigError, match=message):
            load_bench_config(path, schema=EfficiencyBenchConfig)


def test_prompt_distances_separate_phrasings_from_classes():
    import torch

    from drift.bench.prompt_noise import prompt_distances

    base = torch.zeros(2, 3, 4)
    base[1] += 2.0  # class b sits 2 away from class a in every entry
    embeds = torch.stack([base[0], base[0] + 0.5, base[1]])  # two phrasings of a (0.5 apart), one of b
    d = prompt_distances(embeds, ["a", "a", "b"])
    assert d["rms_same_class"] == pytest.approx(0.5)
    assert d["rms_other_class"] == pytest.approx((2.0 + 1.5) / 2)


def test_prompt_noise_probe_measures_every_form_against_the_clean_prompt(testbed, tmp_path):
    from drift.bench.prompt_noise import FORMS, run
    from tests.conftest import small_config

    result = run(small_config(testbed, **{"sampling.num_steps": 4, "sampling.sde_window": {"size": None}}), tmp_path,
                 scales=[0.5, 4.0], num_prompts=2,
                 samples_per_prompt=4)
    rows = result["rows"]
    isotropic = [f for f in FORMS if f[2] == "isotropic"]  # no corpus configured: no principal directions
    assert len(rows) == 1 + len(isotropic) * 2 and rows[0]["form"] == "clean prompt"
    clean = rows[0]["alignment"]
    # a large CADS scale with no floor feeds noise instead of the prompt at the first steps: the samples change
    cads_large = next(r for r in rows if r["form"] == "cads" and r["floor"] == 0 and r["scale"] == 4.0)
    assert cads_large["alignment"] != clean
    assert "| additive | 0 | isotropic | 0.5 |" in (tmp_path / "prompt_noise.md").read_text()
    assert result["reach"]["isotropic"]["word_norm"] > 0


def test_efficiency_benchmark_smoke(testbed, tmp_path):
    from drift.bench.efficiency import run_benchmark as run_efficiency
    from drift.config import EfficiencyBenchConfig

    committed = yaml.safe_load((ROOT / "configs/bench/digits_efficiency.yaml").read_text())
    bench, base = load_bench_config(smoke_config(testbed, tmp_path, committed, 2, timing_repeats=1),
                                    schema=EfficiencyBenchConfig)
    result = run_efficiency(bench, base, seeds=[5], out_dir=tmp_path / "out", progress=False)

    rows = {r["method"]: r for r in result["analysis"]["table"]}
    assert set(rows) == set(committed["methods"])
    grpo = result["trajectories"]["grpo"][5]
    if grpo[-1]["alignment"] > grpo[0]["alignment"]:
        assert rows["grpo"]["fpe_ratio"] == [1.0]  # the baseline against itself
    else:  # two tiny iterations went down: the target is met at the start, where no compute was spent
        assert rows["grpo"]["fpe_ratio"] == [0.0]
    # the window trains 2 steps instead of half of 10: fewer passes per iteration
    assert rows["grpo_window"]["fpe_per_iteration_ratio"][0] < 0.8
    timing = result["rollout_timing"]
    assert timing["plain_vs_ode_rollout_max_abs_diff"] < 1e-4  # noise 0 is diffusers' own deterministic loop
    for name in ("table.md", "table.csv", "efficiency.png", "trajectories.json", "summary.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert len(rows["drift"]["classifier/vendi"]) == 1 and "| drift_window | pixels |" in \
        (tmp_path / "out" / "table.md").read_text()

"""The retraining loop end to end: a new preference batch -> validated -> new reward-model version
-> DRIFT fine-tuning with it -> new generator version (challenger), data version on both; no new
data -> no training; malformed preference files -> nothing registered."""

import shutil

import pandas as pd

from drift.models import load_model
from drift.data.preferences import synthetic_batch
from drift.data.provenance import file_md5
from tests.conftest import model_versions, registry, run_pipeline, small_config

PIPELINE = "pipelines.retraining.drift_retraining_pipeline"


def retrain_config(testbed, prefs_dir, tag):
    return small_config(testbed, **{
        "train.iterations": 3, "eval.every": 3, "registry.model_name": f"gen-{tag}",
        "preferences": {"pairs": str(prefs_dir / "pairs.csv"), "reward_model_name": f"reward-{tag}",
                        "epochs": 100},
    })


def test_new_preferences_retrain_then_nothing_to_do(testbed, zen_env, tmp_path):
    prefs = tmp_path / "prefs"
    model = load_model(str(testbed["root"] / "base_model"))
    synthetic_batch(model, ["the number 3", "a handwritten digit seven"], 60, prefs, seed=1, num_steps=5)
    cfg = retrain_config(testbed, prefs, "ok")
    first = run_pipeline(zen_env, cfg, tmp_path, "retrain-1", PIPELINE)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    client = registry(zen_env)
    version = file_md5(prefs / "pairs.csv")
    reward = client.get_model_version_by_alias("reward-ok", "champion")
    generator = client.get_model_version_by_alias("gen-ok", "challenger")
    assert reward.tags["data.preferences_md5"] == version and float(reward.tags["heldout_accuracy"]) >= 0
    assert generator.tags["data.preferences_md5"] == version and "data.git_revision" in generator.tags

    again = run_pipeline(zen_env, cfg, tmp_path, "retrain-2", PIPELINE)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "no new preference data" in again.stdout + again.stderr
    assert "drift_finetune" not in again.stdout + again.stderr
    assert len(model_versions(client, "gen-ok")) == 1 and len(model_versions(client, "reward-ok")) == 1

    # a malformed batch (an unknown choice, a missing image, a duplicated pair) changes nothing
    bad = tmp_path / "bad_prefs"
    shutil.copytree(prefs, bad)
    table = pd.read_csv(bad / "pairs.csv", dtype=str)
    table.loc[0, "choice"] = "left"
    table.loc[1, "image_b"] = "images/none.png"
    table = pd.concat([table, table.iloc[[2]].assign(pair_id="dup")], ignore_index=True)
    table.to_csv(bad / "pairs.csv", index=False)
    bad_cfg = cfg.with_overrides({"preferences.pairs": str(bad / "pairs.csv")})
    failed = run_pipeline(zen_env, bad_cfg, tmp_path, "retrain-bad", PIPELINE)
    log = failed.stdout + failed.stderr
    assert failed.returncode != 0
    for check in ("choice in", "images exist and decode", "one row per pair and annotator"):
        assert check in log, check
    assert len(model_versions(client, "gen-ok")) == 1 and len(model_versions(client, "reward-ok")) == 1

"""The retraining loop end to end: a new preference batch -> validated -> new reward-model version
-> DRIFT fine-tuning with it -> new generator version, data version on both; a registration that
fails (the promotion lock held) leaves an undecided version that the next run decides, reusing the
trained model; no new data -> no training; malformed preference files -> nothing registered."""

import json
import os
import shutil
import socket
from pathlib import Path

import pandas as pd
import pytest

from drift.data.preferences import append_pairs, synthetic_batch
from drift.data.provenance import file_md5
from drift.models import load_model
from mlops import cli as mlops_cli
from tests.conftest import model_versions, registry, run_pipeline, small_config

PIPELINE = "pipelines.retraining.drift_retraining_pipeline"


def retrain_config(testbed, prefs_dir, tag):
    return small_config(testbed, **{
        "train.iterations": 3, "eval.every": 3, "registry.model_name": f"gen-{tag}",
        "preferences": {"pairs": str(prefs_dir / "pairs.csv"), "reward_model_name": f"reward-{tag}",
                        "epochs": 100, "start_from": "champion"},
    })


def test_new_preferences_retrain_then_nothing_to_do(testbed, zen_env, tmp_path, capsys):
    prefs = tmp_path / "prefs"
    model = load_model(str(testbed["root"] / "base_model"))
    table = synthetic_batch(model, ["the number 3", "a handwritten digit seven"], 60, prefs, seed=1, num_steps=5)
    # a second rater on a third of the pairs, who disagrees on every fourth
    flip = {"first": "second", "second": "first", "tie": "first"}
    ana = [{**row, "pair_id": f"ana-{k}", "annotator": "ana", "source": "label",
            "choice": flip[row["choice"]] if k % 4 == 0 else row["choice"]}
           for k, row in enumerate(table.iloc[:20].to_dict("records"))]
    append_pairs(prefs, ana)
    cfg = retrain_config(testbed, prefs, "ok")
    # Registration fails: another live process (here: pytest's parent) holds the promotion lock past
    # the wait allowed. The version is registered, undecided.
    client = registry(zen_env)
    holder = os.getppid()
    client.create_registered_model("gen-ok.promotion-lock", tags={
        "holder.host": socket.gethostname(), "holder.pid": str(holder), "holder.token": "test"})
    failed = run_pipeline(zen_env, cfg.with_overrides({"registry.lock_timeout": 2}), tmp_path, "retrain-0", PIPELINE)
    log = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "could not acquire the promotion lock gen-ok.promotion-lock within 2 s" in log
    assert f"held by process {holder} on {socket.gethostname()}" in log and "drift registry unlock gen-ok" in log
    assert "iteration 3/3: reward" in log  # it trained
    uri = ["--tracking-uri", zen_env["tracking_uri"]]
    assert mlops_cli.main(["registry", "undecided", "gen-ok", *uri]) == 0
    assert "version 1: registered" in capsys.readouterr().out
    assert mlops_cli.main(["registry", "unlock", "gen-ok", *uri]) == 2  # its holder is alive
    assert "is live" in capsys.readouterr().err
    assert mlops_cli.main(["registry", "unlock", "gen-ok", "--force", *uri]) == 0
    # The next run is no "nothing to do": it decides that version, and trains nothing.
    first = run_pipeline(zen_env, cfg, tmp_path, "retrain-1", PIPELINE)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    log = first.stdout + first.stderr
    assert "retraining" in log and "reusing the model an earlier run of this configuration trained" in log, log[-3000:]
    assert "deciding gen-ok version 1, left undecided by its run" in log and "gen-ok version 1 already" in log
    assert "iteration 3/3: reward" not in log
    version = file_md5(prefs / "pairs.csv")
    reward = client.get_model_version_by_alias("reward-ok", "champion")
    generator = client.get_model_version_by_alias("gen-ok", "challenger")
    assert reward.tags["data.preferences_md5"] == version and float(reward.tags["heldout_accuracy"]) >= 0
    assert generator.tags["data.preferences_md5"] == version and "data.git_revision" in generator.tags
    # the run shows how the raters agree, and the head with each, with the data version
    run = client.get_run(reward.run_id)
    metrics = run.data.metrics
    assert run.data.tags["data.preferences_md5"] == version
    assert metrics["raters/count"] == 2 and metrics["raters/multi_rater_pairs"] == 20
    assert metrics["raters/ana/pairs"] == 20 and metrics["raters/ana/shared_pairs"] == 20
    agree = sum(a["choice"] == row["choice"] for a, row in zip(ana, table.iloc[:20].to_dict("records"))) / 20
    assert metrics["raters/ana/agreement"] == pytest.approx(agree) and "raters/ana/kappa" in metrics
    assert 0 <= metrics["raters/synthetic:bold-strokes-v1/head_agreement"] <= 1
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "preferences/raters.json", str(tmp_path)))
                        .read_text())
    assert logged["data.preferences_md5"] == version and [r["rater"] for r in logged["raters"]] == [
        "ana", "synthetic:bold-strokes-v1"]
    # drift preferences report finds the same champion head in the registry and the same figures
    report = tmp_path / "raters.json"
    assert mlops_cli.main(["preferences", "report", "-c", str(tmp_path / "retrain-1.yaml"), "--tracking-uri",
                           zen_env["tracking_uri"], "--json", str(report)]) == 0
    assert "reward-ok version 1 (the registry's champion)" in capsys.readouterr().out
    assert json.loads(report.read_text())["raters"] == logged["raters"]

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

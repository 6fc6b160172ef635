"""The committed dvc.lock agrees with the code and parameters it was built from, so that a stale
lock fails here in seconds rather than after CI's rebuild of the testbed."""

import hashlib

import yaml

from tests.conftest import ROOT


def _lookup(tree: dict, dotted: str):
    for key in dotted.split("."):
        tree = tree[key]
    return tree


def test_dvc_lock_matches_the_stage_code_and_params():
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    produced = {o["path"]: o["md5"] for s in lock.values() for o in s.get("outs", [])}
    assert set(lock) == set(stages)
    for name, stage in lock.items():
        assert [d["path"] for d in stage["deps"]] == sorted(stages[name]["deps"]), name
        for dep in stage["deps"]:
            if dep["path"] in produced:  # another stage's output: the lock must agree with itself
                assert dep["md5"] == produced[dep["path"]], f"{name}: {dep['path']}"
            else:  # code: the committed file's digest
                digest = hashlib.md5((ROOT / dep["path"]).read_bytes()).hexdigest()
                assert dep["md5"] == digest, f"{name}: {dep['path']} changed since dvc.lock was written (run dvc repro)"
        for key, value in stage["params"]["params.yaml"].items():
            assert _lookup(params, key) == value, f"{name}: params.yaml {key}"


def test_the_data_stage_rebuilds_to_the_locked_outputs(tmp_path):
    # The data stage is plain NumPy and file writing, the same bytes on every machine (the training
    # stages' weights are not: docs in drift/testbed/__init__.py), so its locked hashes are checked.
    from drift.testbed.data import build_data

    params = yaml.safe_load((ROOT / "params.yaml").read_text())["testbed"]
    paths = build_data(tmp_path / "data", params["test_fraction"], params["seed"])
    stage = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]["build_data"]
    locked = {o["path"]: o["md5"] for o in stage["outs"]}
    assert locked == {"data/prompts.csv": hashlib.md5(paths["prompts"].read_bytes()).hexdigest(),
                      "data/testbed/digits.npz": hashlib.md5(paths["images"].read_bytes()).hexdigest()}

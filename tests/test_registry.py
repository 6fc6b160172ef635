"""Fault injection on the registry, against a real MLflow store (SQLite, as the local stack's): the
promotion lock never wedges (a dead holder's lock is broken at once, garbage tags are judged by the
registry's clock, two breakers never both break one lock, release deletes only our own lock); a
decision cannot be lost (a run killed between registering and deciding leaves a version that the
next run decides, and the retraining's "already trained" test counts decided versions only); two
identical candidates in a row leave the champion where it is, a clearly better one moves it."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from drift.config import RegistrySection
from drift.errors import DriftError
from drift.evaluation.scores import SampleScores
from mlops import cli as mlops_cli
from mlops import decisions
from mlops.promotion_lock import HOST, PID, TOKEN, break_lock, lock_name, promotion_lock, read_lock, unlock
from mlops.version_scores import OWN_TERMS, PROTOCOL_ID, RUN_ID, log_scores, scores_under_protocol
from tests.conftest import ROOT

REFERENCE = {"alignment": 1.0, "diversity": 0.05}
QUICK = RegistrySection(lock_timeout=20, lock_stale_after=600)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store for the module (each test registers a model of its own name)."""
    from mlops.stack import create_mlflow_store

    root, cwd = tmp_path_factory.mktemp("registry"), os.getcwd()
    os.chdir(root)  # a SQLite store puts its artifacts under the working directory
    uri = f"sqlite:///{root / 'mlflow.db'}"
    create_mlflow_store(uri)
    previous, env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield MlflowClient(uri, uri)
    finally:
        mlflow.set_tracking_uri(previous)
        os.chdir(cwd)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


@pytest.fixture
def name(request):
    """The test's registered model name."""
    return request.node.name.removeprefix("test_")[:60]


def scores(level: float, seed: int = 0) -> SampleScores:
    """A model whose digit margin is ``level`` plus the prompt and seed's own difficulty (shared by
    every model measured under the protocol) plus its own noise."""
    shared = np.random.default_rng(100).normal(0, 2.0, 64)
    own = np.random.default_rng(seed).normal(0, 0.5, 64)
    margin = (level + shared + own).tolist()
    return SampleScores(protocol_id="p1", prompts=[f"prompt {i}" for i in range(8)], samples_per_prompt=8,
                        per_sample={"alignment": margin, "reward/digit_margin": margin},
                        per_prompt={"diversity": [0.06] * 8, "vendi": [3.0] * 8})


def register(client, name, model_scores, digest="d"):
    """A version registered as the registration step does: its tags at creation, its scores in its run."""
    with mlflow.start_run() as run:
        mlflow.log_text("weights", "model/weights.txt")
        source = mlflow.get_artifact_uri("model")
    log_scores(client, run.info.run_id, model_scores)
    tags = {PROTOCOL_ID: model_scores.protocol_id, OWN_TERMS: "digit_margin", RUN_ID: run.info.run_id,
            decisions.DIGEST: digest, decisions.DECISION: decisions.PENDING, **decisions.reference_tags(REFERENCE)}
    return str(client.create_model_version(name, source, run.info.run_id, tags=tags).version)


def recorded(client):
    def champion_scores(version):
        found = decisions.recorded_scores(client, version, "p1")
        assert found is not None, f"version {version.version} has no recorded scores"
        return found, False
    return champion_scores


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def fake_lock(client, name, **tags):
    client.create_registered_model(lock_name(name), tags=tags)


def test_two_identical_candidates_keep_the_champion_and_a_clearly_better_one_moves_it(store, name):
    client = store
    client.create_registered_model(name)
    said = []
    first = decisions.decide(client, name, register(client, name, scores(7.0)), scores(7.0), REFERENCE, QUICK,
                             recorded(client), said.append)
    assert first.promoted and first.reason.startswith("promoted: no champion yet")
    same = register(client, name, scores(7.0))  # a re-run with identical figures
    again = decisions.decide(client, name, same, scores(7.0), REFERENCE, QUICK, recorded(client), said.append)
    assert not again.promoted and "the champion stays" in again.reason, again.reason
    rerun = register(client, name, scores(7.0, seed=1))  # the same training, other noise
    assert not decisions.decide(client, name, rerun, scores(7.0, seed=1), REFERENCE, QUICK, recorded(client)).promoted
    better = register(client, name, scores(8.5, seed=2))
    won = decisions.decide(client, name, better, scores(8.5, seed=2), REFERENCE, QUICK, recorded(client))
    assert won.promoted and "90% interval [+" in won.reason, won.reason
    assert str(client.get_model_version_by_alias(name, "champion").version) == better
    assert str(client.get_model_version_by_alias(name, "challenger").version) == better
    tags = {v.version: v.tags for v in decisions.versions(client, name)}
    assert [tags[v][decisions.DECISION] for v in sorted(tags, key=int)] == ["promoted", "rejected", "rejected",
                                                                           "promoted"]
    assert client.search_registered_models(f"name = '{lock_name(name)}'") == []  # released


def test_a_dead_holders_lock_is_broken_at_once_and_the_run_promotes(store, name):
    client = store
    client.create_registered_model(name)
    version = register(client, name, scores(7.0))
    # left by a killed run on this machine: its process is gone
    fake_lock(client, name, **{HOST: socket.gethostname(), PID: str(dead_pid()), TOKEN: "killed"})
    said, start = [], time.monotonic()
    decision = decisions.decide(client, name, version, scores(7.0), REFERENCE, QUICK, recorded(client), said.append)
    assert decision.promoted and time.monotonic() - start < 10, said
    assert any("broke the promotion lock" in s and "no longer exists" in s for s in said), said
    # left by this very process, by a release that failed: not alive either
    fake_lock(client, name, **{HOST: socket.gethostname(), PID: str(os.getpid()), TOKEN: "earlier"})
    with promotion_lock(client, name, timeout=10, stale_after=600, say=said.append):
        pass
    assert "left by this process" in said[-1]


def test_a_garbage_or_future_lock_does_not_crash_and_goes_by_the_registry_clock(store, name):
    client = store
    said = []
    # unreadable tags, a timestamp of the holder's clock far in the future: only the registry's clock counts
    fake_lock(client, name, **{PID: "garbage", HOST: "", "acquired": str(time.time() + 1e9)})
    start = time.monotonic()
    with promotion_lock(client, name, timeout=30, stale_after=1.5, say=said.append):
        waited = time.monotonic() - start
    assert 1.0 < waited < 15, said
    assert "unreadable tags" in said[0] and f"drift registry unlock {name}" in said[0], said
    assert any("broke the promotion lock" in s and "no heartbeat for" in s for s in said), said
    # a live holder elsewhere (its heartbeat is fresh): the waiter gives up, saying who holds it
    fake_lock(client, name, **{PID: "1", HOST: "elsewhere", TOKEN: "t"})
    held = "(?s)within 1 s: held by process 1 on elsewhere since .*drift registry unlock"
    with pytest.raises(DriftError, match=held):
        with promotion_lock(client, name, timeout=1, stale_after=600, say=said.append):
            pass
    with pytest.raises(DriftError, match="is live"):
        unlock(client, name)
    assert unlock(client, name, force=True).startswith(f"broke the promotion lock of {name}")
    assert read_lock(client, name) is None


def test_two_waiters_never_both_break_a_lock(store, name):
    client = store
    fake_lock(client, name, **{HOST: "elsewhere", PID: "1", TOKEN: "old"})
    judged = read_lock(client, name)
    # many breakers of one stale lock at once: one wins
    uri = mlflow.get_tracking_uri()
    results, barrier = [], threading.Barrier(6)

    def breaker():
        mine = MlflowClient(uri, uri)
        barrier.wait()
        results.append(break_lock(mine, judged))

    threads = [threading.Thread(target=breaker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    # a late breaker that judged the old lock meets a new holder's lock: it leaves it alone
    fake_lock(client, name, **{HOST: "elsewhere", PID: "2", TOKEN: "new"})
    assert not break_lock(client, judged)
    assert read_lock(client, name).token == "new"


def test_release_deletes_only_our_own_lock(store, name):
    client = store
    said = []
    with promotion_lock(client, name, timeout=10, stale_after=600, say=said.append):
        # our lock is broken meanwhile (taken for stale) and another process takes it
        assert break_lock(client, read_lock(client, name))
        fake_lock(client, name, **{HOST: "elsewhere", PID: "3", TOKEN: "theirs"})
    assert read_lock(client, name).token == "theirs"
    assert "was broken while this process held it" in said[-1]


KILLED_BETWEEN = """
import os, signal, sys
import mlflow
from mlflow import MlflowClient
from mlops import decisions, model_registry
from mlops.recovery import _owner
from mlops.version_scores import log_scores
from tests.test_registry import QUICK, REFERENCE, scores

def register_generator(name, model_dir, sampler, tags):
    mlflow.log_text("weights", "model/weights.txt")
    run_id = mlflow.active_run().info.run_id
    log_scores(MlflowClient(), run_id, scores(8.0))  # as the evaluation step does
    return model_registry._register(type("Info", (), {"model_uri": mlflow.get_artifact_uri("model")}), name,
                                    {**tags, "mlflow_run_id": run_id})

model_registry.register_generator = register_generator
decisions.decide = lambda *args, **kw: os.kill(os.getpid(), signal.SIGKILL)  # killed before deciding
with mlflow.start_run():
    mlflow.set_tags(_owner())  # as the pipeline's first step records its process
    tags = {"protocol.id": "p1", "protocol.reward_terms": "digit_margin", "data.preferences_md5": "new"}
    decisions.register_and_decide(sys.argv[2], sys.argv[1], None, tags, scores(8.0), REFERENCE, QUICK, None)
"""


def test_a_version_left_by_a_run_killed_before_its_decision_is_decided_by_the_next(store, tmp_path, name):
    client = store
    client.create_registered_model(name)
    old = register(client, name, scores(7.0))
    decisions.decide(client, name, old, scores(7.0), REFERENCE, QUICK, recorded(client))
    client.set_model_version_tag(name, old, "data.preferences_md5", "old")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").write_text("trained")
    killed = subprocess.run([sys.executable, "-c", KILLED_BETWEEN, str(tmp_path / "model"), name], cwd=os.getcwd(),
                            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    [left] = decisions.undecided(client, name)
    assert left.tags[decisions.DECISION] == "pending" and left.tags["data.preferences_md5"] == "new"
    # the retraining's "already trained with" reads decided versions only: this data is new to it
    assert decisions.latest_decided(client, name).tags["data.preferences_md5"] == "old"
    assert "ended" in decisions.describe(client, left)  # `drift registry undecided` lists it
    said = []
    [decision] = decisions.settle_undecided(client, name, "p1", QUICK, recorded(client), said.append)
    assert decision.version == str(left.version) and decision.promoted, said
    assert decisions.undecided(client, name) == []
    assert client.get_model_version_by_alias(name, "champion").version == left.version  # (same store, same type)
    assert decisions.latest_decided(client, name).tags["data.preferences_md5"] == "new"
    # a version with no tags at all (the old registration, killed between creating and tagging) is marked failed
    with mlflow.start_run() as run:
        mlflow.log_text("weights", "model/weights.txt")
        source = mlflow.get_artifact_uri("model")
    bare = client.create_model_version(name, source, run.info.run_id).version
    decisions.settle_undecided(client, name, "p1", QUICK, recorded(client), said.append)
    assert client.get_model_version(name, bare).tags[decisions.DECISION] == "failed"
    assert "registered without its evaluation" in client.get_model_version(name, bare).tags[decisions.REASON]
    # the operator gives up on an undecided version; a decided one is refused
    uri = ["--tracking-uri", mlflow.get_tracking_uri()]
    stuck = register(client, name, scores(7.0), digest="other")
    assert mlops_cli.main(["registry", "fail", name, stuck, "--reason", "wrong data", *uri]) == 0
    assert client.get_model_version(name, stuck).tags[decisions.REASON] == "failed: wrong data"
    assert mlops_cli.main(["registry", "fail", name, str(left.version), *uri]) == 2
    assert mlops_cli.main(["registry", "undecided", name, *uri]) == 0


def test_a_champion_without_scores_is_evaluated_once(store, monkeypatch, name):
    """A champion registered before scores were kept is measured again under the protocol, once:
    its scores are then logged in its own run."""
    client = store
    client.create_registered_model(name)
    with mlflow.start_run() as run:
        mlflow.log_text("weights", "model/weights.txt")
        source = mlflow.get_artifact_uri("model")
    legacy = client.create_model_version(name, source, run.info.run_id,
                                         tags={"alignment": "7.0", "promotion": "promoted: no champion yet"})
    evaluated = []

    def evaluate(*args, **kw):
        evaluated.append(1)
        return scores(7.0)

    monkeypatch.setattr("mlops.version_scores._evaluate", evaluate)
    uri = mlflow.get_tracking_uri()
    assert scores_under_protocol(uri, legacy, None, None, "p1") == (scores(7.0), True)
    assert scores_under_protocol(uri, client.get_model_version(name, legacy.version), None, None, "p1") == (
        scores(7.0), False)
    assert evaluated == [1]

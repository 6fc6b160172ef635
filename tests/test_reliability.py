"""Fault injection: crafted files never execute, damaged checkpoints are refused with a fallback to
the newest intact one, a full disk while checkpointing is reported and leaves the newest intact
checkpoint, kills during training and during a checkpoint write resume to the same weights, two runs
of one configuration never share a run folder, non-finite values stop training, resumes with another
configuration are refused, and promotions from two processes at once end with the better model as
champion."""

import errno
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from drift.config import parse_config
from drift.data.prompts import read_prompts
from drift.data.validation import validate_file
from drift.errors import CheckpointError, ConfigError, ConfigMismatchError, DriftError, NonFiniteError
from drift.training import checkpoints
from drift.training.run import METRICS_LOG, read_metrics_log, run_training
from tests.conftest import BIN
from tests.test_trainer import make_config, make_trainer

MARKER = "pwned"


class Exploit:
    """Unpickling this writes a marker file: proof that a load executed code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def trained(tiny_sd15_dir, tmp_path_factory):
    """A trainer after 2 iterations, with a checkpoint after each."""
    trainer = make_trainer(tiny_sd15_dir, iterations=2)
    trainer.cfg.checkpoint.every = 1
    trainer.cfg.checkpoint.keep_last = 0
    directory = tmp_path_factory.mktemp("trained")
    trainer.train(checkpoint_dir=directory)
    return trainer, directory


def _copy(trained, tmp_path):
    shutil.copytree(trained[1], tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _rewrite_manifest(path):
    """What an attacker who can write the directory would do: make the digests match."""
    from drift.data.provenance import file_digest

    files = {n: file_digest(path / n, "sha256") for n in (checkpoints.WEIGHTS, checkpoints.TENSORS, checkpoints.STATE)}
    (path / checkpoints.MANIFEST).write_text(json.dumps({"files": files}))


def test_a_crafted_pickle_never_runs(tiny_sd15_dir, trained, tmp_path):
    newest = checkpoints.list_checkpoints(_copy(trained, tmp_path))[-1]
    marker = tmp_path / MARKER
    # a pickle where the tensors should be, with digests that match it
    (newest / checkpoints.TENSORS).write_bytes(pickle.dumps(Exploit(marker)))
    _rewrite_manifest(newest)
    # and the old pickled format beside it
    (newest / "trainer_state.pt").write_bytes(pickle.dumps({"optimizer": Exploit(marker)}))
    with pytest.raises(CheckpointError, match="unreadable"):
        checkpoints.load_checkpoint(newest)
    ckpt, problems = checkpoints.load_newest(tmp_path / "ckpt")
    assert ckpt.path.name == "iter_000001" and "unreadable" in problems[0]
    make_trainer(tiny_sd15_dir, iterations=2).restore(ckpt, allow_config_change=True)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["garbage_in_tensor_data", "truncated", "empty", "garbled_state", "no_manifest"])
def test_damaged_checkpoints_fall_back_to_the_newest_intact_one(trained, tmp_path, damage):
    newest = checkpoints.list_checkpoints(_copy(trained, tmp_path))[-1]
    weights = newest / checkpoints.WEIGHTS
    data = bytearray(weights.read_bytes())
    if damage == "garbage_in_tensor_data":
        data[-8192:-4096] = os.urandom(4096)
        weights.write_bytes(bytes(data))
    elif damage == "truncated":
        weights.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "empty":
        weights.write_bytes(b"")
    elif damage == "garbled_state":
        (newest / checkpoints.STATE).write_text("{not json")
    else:
        (newest / checkpoints.MANIFEST).unlink()
    ckpt, problems = checkpoints.load_newest(tmp_path / "ckpt")
    assert ckpt.path.name == "iter_000001"
    assert problems and "iter_000002" in problems[0]
    assert ("SHA-256" in problems[0]) if damage != "no_manifest" else ("incomplete" in problems[0])


def test_non_finite_weights_are_refused_even_with_matching_digests(trained, tmp_path):
    trainer = trained[0]
    weights = trainer.trained_weights()
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = torch.full_like(weights[name], float("nan"))
    checkpoints.save_checkpoint(tmp_path / "nan" / "iter_000001", weights, trainer.state_dict())
    with pytest.raises(CheckpointError, match="non-finite"):
        checkpoints.load_checkpoint(tmp_path / "nan" / "iter_000001")


def test_keep_last_prunes_old_checkpoints(trained, tmp_path):
    directory = _copy(trained, tmp_path)
    trainer = trained[0]
    trainer.save_checkpoint(directory / "iter_000003")
    assert checkpoints.prune(directory, keep_last=2) == [directory / "iter_000001"]
    assert [p.name for p in checkpoints.list_checkpoints(directory)] == ["iter_000002", "iter_000003"]


@pytest.mark.parametrize("failure", ["safetensors", "json"])
def test_a_full_disk_while_checkpointing_is_reported_and_the_run_resumes_from_the_newest_intact_one(
        tiny_sd15_dir, trained, tmp_path, monkeypatch, capsys, failure):
    from safetensors import SafetensorError

    from drift.errors import DiskFullError

    run_dir = tmp_path / "run"
    shutil.copytree(trained[1], run_dir / "checkpoints")
    trainer = trained[0]

    def full(real):
        def write(*args):
            Path(args[-1]).write_bytes(b"partial")
            if failure == "safetensors":  # what safetensors raises on ENOSPC
                raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                      'message: "No space left on device" })')
            raise OSError(errno.ENOSPC, "No space left on device")
        return write

    if failure == "safetensors":
        monkeypatch.setattr(checkpoints, "save_file", full(checkpoints.save_file))
    else:
        monkeypatch.setattr(Path, "write_text", lambda self, text: full(None)(self))
    target = run_dir / "checkpoints" / "iter_000003"
    with pytest.raises(DiskFullError) as err:
        trainer.save_checkpoint(target)
    monkeypatch.undo()
    message = str(err.value)
    assert f"disk full while writing the checkpoint {target}: it needs about " in message, message
    assert "are free there" in message and "iter_000002, is untouched" in message, message
    assert not list((run_dir / "checkpoints").glob("*.tmp"))  # the partial folder is gone
    assert checkpoints.load_newest(run_dir / "checkpoints")[0].path.name == "iter_000002"
    # run again: where it resumes from is said before training starts
    run_training(make_config(tiny_sd15_dir, iterations=3), run_dir, parts=_parts(tiny_sd15_dir), progress=False,
                 allow_config_change=True, callback=lambda metrics, i: print(f"trained iteration {i}"))
    out = capsys.readouterr().out
    assert out.index(f"resuming from {run_dir / 'checkpoints' / 'iter_000002'} (iteration 2 of 3)") < out.index(
        "trained iteration 3"), out


HOLD_FOLDER = """
import sys, time
from drift.training import run_folder
folder = run_folder.choose(sys.argv[1])
(folder.path / "checkpoints" / "iter_000001").mkdir(parents=True)
print(folder.path, flush=True)
time.sleep(600)
"""


def test_two_runs_of_one_configuration_never_share_a_run_folder(tmp_path):
    from drift.training import run_folder

    parent = tmp_path / "digits-abc"
    first = subprocess.Popen([sys.executable, "-c", HOLD_FOLDER, str(parent)], stdout=subprocess.PIPE, text=True)
    try:
        held = Path(first.stdout.readline().strip())
        with run_folder.choose(parent) as second:  # while the first trains
            assert second.path != held and second.path.parent == parent
            with pytest.raises(DriftError, match=f"{held} is in use by process {first.pid} on "):
                run_folder.claim_or_fail(held)  # what `drift train --out` on it says
    finally:
        first.kill()
        first.wait()
    # the first run is gone: its folder (with a checkpoint) is taken over, not the empty one
    with run_folder.choose(parent) as taken:
        assert taken.path == held and taken.finished is None
    # a finished model waiting for its decision comes first; run.resume: false starts afresh
    (second.path / "model").mkdir()
    run_folder.mark_finished(second.path, "digest-1", 10)
    with run_folder.choose(parent) as reused:
        assert reused.path == second.path and reused.finished == {"digest": "digest-1", "iterations": 10}
    with run_folder.choose(parent, fresh=True) as fresh:
        assert fresh.path not in (held, second.path) and not held.exists() and not second.path.exists()
        (fresh.path / "model").mkdir()
        run_folder.mark_finished(fresh.path, "digest-2", 10)
        assert run_folder.forget(tmp_path, {"digest-2"}) == []  # in use: kept
    assert run_folder.forget(tmp_path, {"digest-2"}) == [fresh.path]  # decided and free: removed


def test_resume_with_another_configuration_is_refused_naming_the_fields(tiny_sd15_dir, tmp_path):
    run_training(make_config(tiny_sd15_dir, iterations=1), tmp_path, parts=_parts(tiny_sd15_dir), progress=False)
    changed = make_config(tiny_sd15_dir, iterations=2, lr=5e-3)
    with pytest.raises(ConfigMismatchError, match=r"train\.lr: 0\.001 -> 0\.005") as err:
        run_training(changed, tmp_path, parts=_parts(tiny_sd15_dir), progress=False)
    assert "iterations" not in str(err.value)
    run = run_training(changed, tmp_path, parts=_parts(tiny_sd15_dir), allow_config_change=True, progress=False)
    assert run.resumed_from.name == "iter_000001" and run.trainer.iteration == 2
    # the budget alone may change
    run = run_training(make_config(tiny_sd15_dir, iterations=3, lr=5e-3), tmp_path, parts=_parts(tiny_sd15_dir),
                       progress=False)
    assert run.trainer.iteration == 3


def _parts(source):
    from drift.build import RunParts
    from drift.models import load_model
    from drift.scoring.embeddings import pixels
    from drift.scoring.rewards import WeightedReward
    from tests.test_trainer import PROMPTS

    cfg = make_config(source)
    return RunParts(load_model(str(source)), WeightedReward.from_config(cfg.reward), pixels(), PROMPTS, PROMPTS[:2])


def test_non_finite_reward_stops_before_the_weights_change(tiny_sd15_dir):
    trainer = make_trainer(tiny_sd15_dir, iterations=1)
    before = {k: v.clone() for k, v in trainer.model.denoiser.state_dict().items()}
    trainer.reward.terms[0] = (trainer.reward.terms[0][0], 1.0,
                               lambda images, prompts: torch.full((len(prompts),), math.nan))
    with pytest.raises(NonFiniteError, match="non-finite reward"):
        trainer.step()
    assert all(torch.equal(v, trainer.model.denoiser.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_the_configuration_refuses_nan_and_infinity(bad):
    with pytest.raises(ConfigError, match="reward.0.weight"):
        parse_config({"model": {"source": "m"}, "data": {"prompts": "p.csv"},
                      "reward": [{"name": "digit_margin", "weight": bad}]})


def test_device_that_the_machine_lacks_is_a_clear_error():
    from drift.build import check_device

    if not torch.cuda.is_available():
        with pytest.raises(DriftError, match="no cuda device"):
            check_device("cuda")
    with pytest.raises(ConfigError, match="run.device"):
        parse_config({"model": {"source": "m"}, "data": {"prompts": "p.csv"}, "reward": [{"name": "x"}],
                      "run": {"device": "gpu0"}})


def test_prompt_inputs(tmp_path):
    rows = "".join(f"the number {i},train\n" for i in range(6)) + "".join(f"digit {i} by hand,eval\n" for i in range(5))
    invisible = tmp_path / "invisible.csv"
    invisible.write_text("prompt,split\n" + rows + "\u200b\u200b\u200b\u200b,eval\n", encoding="utf-8")
    report = validate_file(invisible)
    assert not report.success and "prompt length" in report.to_text()
    joined = tmp_path / "joined.csv"  # a zero-width space inside a prompt makes no new prompt
    joined.write_text("prompt,split\n" + rows + "digit 1 by\u200b hand,eval\n", encoding="utf-8")
    assert "prompts are unique" in validate_file(joined).to_text()
    with pytest.raises(DriftError, match="is a directory"):
        read_prompts(tmp_path)
    big = tmp_path / "big.csv"
    big.write_bytes(b"prompt,split\n" + b"x" * (2 * 2**20))
    with pytest.raises(DriftError, match="above the 1 MB limit"):
        read_prompts(big, max_file_mb=1)


@pytest.mark.parametrize("argv, message", [
    (["sample", "-c", "configs/digits.yaml", "-n", "-2"], "at least 1, got '-2'"),
    (["sample", "-c", "configs/digits.yaml", "-n", "0"], "at least 1, got '0'"),
    (["sample", "-c", "configs/digits.yaml", "--upscale", "two"], "at least 1, got 'two'"),
    (["sample", "-c", "configs/digits.yaml", "--out", "grid"], "'grid' does not end in an image extension"),
    (["preferences", "add", "-c", "configs/retrain_local.yaml", "--seed", "1", "--pairs", "0"], "at least 1"),
    (["bench", "pareto", "-c", "configs/bench/digits_pareto.yaml", "--out", "x", "--workers", "0"], "at least 1"),
])
def test_command_line_counts_and_image_paths_are_checked_before_any_work(argv, message, capsys):
    from drift.cli import app

    with pytest.raises(SystemExit) as exit_:
        app(argv, prog_name="drift")
    assert exit_.value.code == 2 and message in capsys.readouterr().err


KILL_DURING_WRITE = """
import os, signal, sys
from drift.training import checkpoints
original = checkpoints._write_synced
def write(path, fn):
    if path.name == checkpoints.MANIFEST:
        os.kill(os.getpid(), signal.SIGKILL)  # the first checkpoint this process writes never completes
    original(path, fn)
checkpoints._write_synced = write
from mlops.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _train_cli(config_path, out, *extra, script=None):
    cmd = [sys.executable, "-c", script] if script else [str(BIN / "drift")]
    return subprocess.Popen(cmd + ["train", "-c", str(config_path), "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_kill_9_during_training_and_during_a_checkpoint_write_resume_to_the_same_weights(tiny_sd15_dir, tmp_path):
    from safetensors.torch import load_file

    cfg = make_config(tiny_sd15_dir, iterations=6).with_overrides(
        {"checkpoint.every": 1, "checkpoint.keep_last": 0, "data.prompts": str(tmp_path / "prompts.csv")})
    rows = "".join(f"{p},train\n{p} again,eval\n" for p in ("a red cat", "a blue dog", "a green bird"))
    (tmp_path / "prompts.csv").write_text("prompt,split\n" + rows)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert _train_cli(path, tmp_path / "full").wait(timeout=600) == 0

    killed = _train_cli(path, tmp_path / "killed")
    ckpt_dir = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 600
    while not (ckpt_dir / "iter_000001" / checkpoints.MANIFEST).exists():
        assert killed.poll() is None and time.time() < deadline, killed.stdout.read() if killed.stdout else ""
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    intact = checkpoints.list_checkpoints(ckpt_dir)[-1]
    assert intact.name < "iter_000004"
    during_write = _train_cli(path, tmp_path / "killed", "--resume", script=KILL_DURING_WRITE)
    assert during_write.wait(timeout=600) == -signal.SIGKILL
    assert checkpoints.load_newest(ckpt_dir)[0].path == intact  # the half-written one does not count
    resumed = _train_cli(path, tmp_path / "killed", "--resume")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert "resuming from" in output
    full = load_file(next((tmp_path / "full" / "model" / "unet").glob("*.safetensors")))
    again = load_file(next((tmp_path / "killed" / "model" / "unet").glob("*.safetensors")))
    assert all(torch.equal(full[k], again[k]) for k in full)
    logged = [r["iteration"] for r in read_metrics_log(tmp_path / "killed" / METRICS_LOG) if "reward_mean" in r]
    assert logged == [1, 2, 3, 4, 5, 6]  # every iteration once, none lost, none twice


def test_two_processes_promoting_at_once_end_with_the_better_model_as_champion(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from mlops.stack import create_mlflow_store

    monkeypatch.chdir(tmp_path)  # a SQLite store puts its artifacts under the working directory
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    create_mlflow_store(uri)  # created once, as the stack setup does
    MlflowClient(uri, uri).create_registered_model("gate")
    script = tmp_path / "promote.py"
    script.write_text(PROMOTE)
    # The worse model starts its decision 0.3 s later: without the lock it would read "no
    # champion" too, and set the alias last.
    procs = [subprocess.Popen([sys.executable, str(script), uri, str(alignment), str(tmp_path / "go"), str(delay)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
             for alignment, delay in ((9.0, 0.0), (5.0, 0.3))]
    time.sleep(3)
    (tmp_path / "go").touch()
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    client = MlflowClient(uri, uri)
    champion = client.get_model_version_by_alias("gate", "champion")
    assert float(champion.tags["alignment"]) == 9.0, outputs
    assert client.search_registered_models("name = 'gate.promotion-lock'") == []


PROMOTE = """
import sys, time
from pathlib import Path
import mlflow
from mlflow import MlflowClient
from drift.config import RegistrySection
from drift.evaluation.scores import SampleScores
from mlops import decisions
from mlops.version_scores import log_scores

uri, alignment, go, delay = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
client = MlflowClient(uri, uri)
mlflow.set_tracking_uri(uri)
scores = SampleScores(protocol_id="p", prompts=["a", "b"], samples_per_prompt=2,
                      per_sample={"alignment": [alignment, alignment + 1, alignment - 1, alignment]},
                      per_prompt={"diversity": [1.0, 1.0]})
with mlflow.start_run() as run:
    mlflow.log_text("weights", "model/weights.txt")
    source = mlflow.get_artifact_uri("model")
log_scores(client, run.info.run_id, scores)
while not go.exists():
    time.sleep(0.01)
tags = {"alignment": str(alignment), "protocol.id": "p", "mlflow_run_id": run.info.run_id, "decision": "pending"}
version = client.create_model_version("gate", source, tags=tags).version
time.sleep(delay)

def champion_scores(champion):
    time.sleep(1.0)  # a slow evaluation of the champion, outside the lock: the window a race needs
    return decisions.recorded_scores(client, champion, "p"), False

print(decisions.decide(client, "gate", version, scores, {"diversity": 1.0}, RegistrySection(), champion_scores))
"""

"""A whole training run in a run directory, as `drift train` and the pipeline's fine-tuning step
both run it: resume from the newest intact checkpoint, train with checkpoints and a metrics log
written line by line, and hand back the trainer with its final weights.

    run_dir/
        checkpoints/iter_NNNNNN/   see drift.training.checkpoints
        metrics.jsonl              one JSON object per reported step: {"iteration": i, ...metrics}
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from drift.build import RunParts, build_trainer
from drift.config import DriftConfig
from drift.errors import DriftError
from drift.evaluation.protocol import fingerprint
from drift.models.trained import BaseReference, reference_base
from drift.training import checkpoints
from drift.training import distributed as dist
from drift.training.trainer import MetricsCallback, Trainer

METRICS_LOG = "metrics.jsonl"


@dataclass
class TrainingRun:
    trainer: Trainer
    base: BaseReference  # the base model, pinned when the run started (what save_model records)
    resumed_from: Path | None = None
    damaged_checkpoints: list[str] = field(default_factory=list)  # newer ones skipped, and why


def run_key(cfg: DriftConfig, start: str | None = None) -> str:
    """A configuration's identity for taking over its earlier runs (drift.training.run_folder): its
    name and a digest of its configuration without what does not change the training (the iteration
    budget, run.resume, the registry section), with reward and embedding checkpoints by content (a
    retrained reward head is another configuration, the same head at another path the same one), and
    ``start``: the digest of the model training starts from, when it is not the base."""
    data = cfg.model_dump(mode="json")
    data["train"].pop("iterations")
    data["run"].pop("resume")
    data.pop("registry")
    data["reward"], data["embedding"] = fingerprint(data["reward"]), fingerprint(data["embedding"])
    data["drift"]["shaping"]["embedding"] = fingerprint(data["drift"]["shaping"]["embedding"])
    if start is not None:
        data["start"] = start
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    return f"{cfg.run.name}-{digest}"


def read_metrics_log(path: Path) -> list[dict]:
    """The logged records, up to the first line a kill cut short."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                int(record["iteration"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                break
            records.append(record)
    return records


def truncate_metrics_log(path: Path, iteration: int) -> list[dict]:
    """Keep only the records up to ``iteration`` (what a resumed run logs again is not logged
    twice); returns them."""
    kept = [r for r in read_metrics_log(path) if r["iteration"] <= iteration]
    if path.is_file():
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept


def run_training(cfg: DriftConfig, run_dir: str | Path, parts: RunParts | None = None,
                 callback: MetricsCallback | None = None, resume: bool = True, allow_config_change: bool = False,
                 progress: bool = True, replay: bool = False) -> TrainingRun:
    """Train ``cfg`` in ``run_dir``; with ``resume``, continue from its newest intact checkpoint
    (damaged newer ones are reported and skipped, the partial one a kill or a full disk left is
    removed; where it resumes from is said before training starts). With ``replay``, a resumed run
    first passes the logged metrics up to its checkpoint to ``callback`` (a new tracking run then
    holds the whole history). Returns the trainer after the last iteration."""
    run_dir = Path(run_dir)
    trainer = build_trainer(cfg, parts)
    ckpt_dir = run_dir / "checkpoints"
    run = TrainingRun(trainer, reference_base(cfg.model.source, cfg.model.revision))
    if not resume and checkpoints.list_checkpoints(ckpt_dir):
        raise DriftError(f"{run_dir} already holds checkpoints of an earlier run: resume it (drift train --resume), "
                         "or give the new run another run.name or --out")
    if resume:
        ckpt, run.damaged_checkpoints = checkpoints.load_newest(ckpt_dir)
        if dist.is_main():
            checkpoints.remove_partial(ckpt_dir)
            for problem in run.damaged_checkpoints:
                print(f"skipped a damaged checkpoint: {problem}", file=sys.stderr, flush=True)
        if ckpt is not None:
            trainer.restore(ckpt, allow_config_change)
            run.resumed_from = ckpt.path
            if dist.is_main():
                print(f"resuming from {ckpt.path} (iteration {trainer.iteration} of {cfg.train.iterations})",
                      flush=True)
    metrics_path = run_dir / METRICS_LOG
    if not dist.is_main():
        trainer.train(callback, checkpoint_dir=ckpt_dir, progress=progress)
        return run
    run_dir.mkdir(parents=True, exist_ok=True)
    # Records after the checkpoint (or all, when starting afresh) are logged again by this run.
    history = truncate_metrics_log(metrics_path, trainer.iteration if run.resumed_from else -1)
    if replay and callback is not None:
        for record in history:
            callback({k: v for k, v in record.items() if k != "iteration"}, record["iteration"])
    with metrics_path.open("a", buffering=1) as metrics_log:

        def record(metrics: dict[str, float], iteration: int) -> None:
            metrics_log.write(json.dumps({"iteration": iteration, **metrics}) + "\n")
            if callback is not None:
                callback(metrics, iteration)

        trainer.train(record, checkpoint_dir=ckpt_dir, progress=progress)
    return run

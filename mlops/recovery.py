"""Runs left RUNNING by a process that died (kill -9, a crash, a closed laptop) are marked failed
when the next run of the pipeline starts on the same machine: the ZenML run and its running steps,
and the MLflow run. Each run records the host and process that runs it; a run whose process no
longer exists on this host is orphaned. Runs on other hosts are left to their orchestrator."""

from __future__ import annotations

import os
import socket

import mlflow
from mlflow import MlflowClient

HOST, PID = "drift.host", "drift.pid"


def _owner() -> dict[str, str]:
    return {HOST: socket.gethostname(), PID: str(os.getpid())}


def process_alive(pid: int | str) -> bool:
    """Whether process ``pid`` exists on this machine (an unreadable id counts as alive: nothing is
    concluded from it)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def orphaned(owner: dict) -> bool:
    """Whether the owner recorded in ``owner`` (run tags or metadata) ran on this machine and its
    process is gone."""
    return owner.get(HOST) == socket.gethostname() and PID in owner and not process_alive(str(owner[PID]))


def fail_orphaned_runs() -> list[str]:
    """Mark this pipeline's orphaned ZenML and MLflow runs failed; returns their names."""
    from zenml import get_step_context
    from zenml.client import Client
    from zenml.enums import ExecutionStatus
    from zenml.models import PipelineRunUpdate, StepRunUpdate

    active = (ExecutionStatus.RUNNING, ExecutionStatus.INITIALIZING)
    client = Client()
    current = get_step_context().pipeline_run
    failed = []
    for status in active:
        for run in client.list_pipeline_runs(pipeline_id=current.pipeline.id, status=status, size=100).items:
            if run.id == current.id or not orphaned(run.run_metadata):
                continue
            reason = f"its process {run.run_metadata[PID]} on {run.run_metadata[HOST]} no longer exists"
            # ZenML 0.98 has no public call that marks a run failed: the store's own update is used,
            # with zenml pinned in pyproject.toml and the calls checked by tests/test_environment.py.
            for step_run in run.steps.values():
                if step_run.status in active:
                    client.zen_store.update_run_step(step_run.id, StepRunUpdate(status=ExecutionStatus.FAILED))
            client.zen_store.update_run(run.id, PipelineRunUpdate(status=ExecutionStatus.FAILED, status_reason=reason))
            failed.append(run.name)
    tracking = MlflowClient()
    experiment = mlflow.get_experiment_by_name(current.pipeline.name)
    if experiment is not None:
        for run in tracking.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'"):
            if run.info.run_id != mlflow.active_run().info.run_id and orphaned(run.data.tags):
                tracking.set_terminated(run.info.run_id, "FAILED")
                failed.append(run.info.run_name)
    return failed


def claim_run() -> None:
    """Fail the orphans, then record this process as the owner of the current run (ZenML run
    metadata and MLflow run tags)."""
    from zenml import get_step_context, log_metadata

    for name in fail_orphaned_runs():
        print(f"marked run {name} failed: it was left running by a process that no longer exists")
    owner = _owner()
    log_metadata(metadata=owner, run_id_name_or_prefix=get_step_context().pipeline_run.id)
    mlflow.set_tags(owner)

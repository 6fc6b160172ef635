"""Decisions on registered generator versions that cannot be lost.

A version is created with everything its decision needs in its tags, in one transaction: its figures
and evaluation protocol, the reference model's figures, the content digest of what was trained, the
data versions and ``decision: pending``; its per-sample scores lie in its run (mlops.version_scores).
It is then decided by the promotion gate (drift.evaluation.promotion) against the champion of that
moment, under the promotion lock (mlops.promotion_lock), which is held only to read the champion,
compare and record: a champion that changed since it was evaluated is evaluated outside the lock and
the comparison retried. The record is written in this order: the reason (tag ``promotion``), the
``champion`` alias when promoted, ``decision`` (promoted or rejected), the ``challenger`` alias (the
latest decided version). A kill at any point leaves a version that is undecided or decided, never
half of each: a pending version that is already champion is recorded as promoted.

A version whose run ended before its decision (killed, failed, an unreachable lock) stays pending. The
next run registering under the same protocol decides it first (``settle_undecided``), as does
`drift registry decide -c CONFIG`; one that cannot be decided (registered without its evaluation) is
marked ``failed`` with the reason, and `drift registry fail` gives one up by hand. A version whose
run is still going is left to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from drift.data.provenance import content_digest
from drift.errors import DriftError
from drift.evaluation.promotion import promotion_decision
from drift.evaluation.scores import SampleScores
from mlops.model_registry import version_by_alias
from mlops.promotion_lock import promotion_lock, utc_time
from mlops.recovery import orphaned
from mlops.version_scores import PROTOCOL_ID, own_terms, recorded_scores, version_run

DECISION, REASON, DIGEST, REFERENCE = "decision", "promotion", "model.digest", "reference."
PENDING, PROMOTED, REJECTED, FAILED = "pending", "promoted", "rejected", "failed"
MAX_ATTEMPTS = 5
MAX_TAG = 5000  # MLflow's limit on a tag value

ChampionScores = Callable[[ModelVersion], tuple[SampleScores, bool]]
"""The champion's scores under the candidate's protocol, and whether it was evaluated now for them."""


def decision_of(version: ModelVersion) -> str:
    """pending, promoted, rejected or failed; versions registered before the decision tag existed
    are decided when they carry a promotion reason."""
    decision = version.tags.get(DECISION)
    if decision:
        return decision
    reason = version.tags.get(REASON)
    if reason:
        return PROMOTED if reason.startswith("promoted") else REJECTED
    return PENDING


def decided(version: ModelVersion) -> bool:
    """Gated: promoted or rejected (a failed version was never compared)."""
    return decision_of(version) in (PROMOTED, REJECTED)


def versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of ``name``, oldest first (none when the model does not exist)."""
    try:
        found = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return []
    return sorted(found, key=lambda v: int(v.version))


def undecided(client: MlflowClient, name: str) -> list[ModelVersion]:
    return [v for v in versions(client, name) if decision_of(v) == PENDING]


def latest_decided(client: MlflowClient, name: str) -> ModelVersion | None:
    """The newest version the gate has decided on."""
    done = [v for v in versions(client, name) if decided(v)]
    return done[-1] if done else None


def reference_tags(reference: dict) -> dict[str, str]:
    return {f"{REFERENCE}{k}": str(float(v)) for k, v in reference.items() if k in ("alignment", "diversity")}


def recorded_reference(version: ModelVersion) -> dict[str, float] | None:
    values = {k.removeprefix(REFERENCE): float(v) for k, v in version.tags.items() if k.startswith(REFERENCE)}
    return values if "diversity" in values else None


@dataclass
class Decision:
    version: str
    promoted: bool
    reason: str
    champion: str | None = None  # the champion it was compared with
    champion_figures: dict | None = None
    champion_re_evaluated: bool = False


def _record(client: MlflowClient, name: str, version: str, promote: bool, reason: str) -> None:
    client.set_model_version_tag(name, version, REASON, reason[:MAX_TAG])
    if promote:
        client.set_registered_model_alias(name, "champion", version)
    client.set_model_version_tag(name, version, DECISION, PROMOTED if promote else REJECTED)
    challenger = version_by_alias(client, name, "challenger")
    if challenger is None or int(challenger.version) <= int(version):
        client.set_registered_model_alias(name, "challenger", version)


def _number(version: ModelVersion | None) -> str | None:
    # A SQL store gives version numbers as ints, a tracking server as strings.
    return None if version is None else str(version.version)


def decide(client: MlflowClient, name: str, version: str, candidate: SampleScores, reference: dict, rule,
           champion_scores: ChampionScores, say=print) -> Decision:
    """Decide ``version`` (whose scores are ``candidate``, its reference model's figures
    ``reference``) against the current champion with the gate of ``rule`` (registry section), and
    record the decision. The champion's scores are obtained outside the promotion lock; under it the
    champion is read again, and a change means another round."""
    version, known = str(version), {}
    for _ in range(MAX_ATTEMPTS):
        champion = version_by_alias(client, name, "champion")
        if champion is not None and _number(champion) != version and _number(champion) not in known:
            known[_number(champion)] = champion_scores(champion)
        with promotion_lock(client, name, rule.lock_timeout, rule.lock_stale_after, say):
            if _number(version_by_alias(client, name, "champion")) != _number(champion):
                say(f"the champion of {name} changed while version {version} was being compared: again")
                continue
            current = client.get_model_version(name, version)
            if decided(current):  # by another process meanwhile
                return Decision(version, decision_of(current) == PROMOTED, current.tags.get(REASON, ""))
            if _number(champion) == version:
                reason = current.tags.get(REASON) or "promoted: champion already (its run ended before recording it)"
                _record(client, name, version, True, reason)
                return Decision(version, True, reason)
            compared = known.get(_number(champion))
            promote, reason = promotion_decision(candidate, compared and compared[0], reference, rule,
                                                 own_terms(champion) if champion is not None else None)
            if champion is not None:
                how = "evaluated now under this protocol" if compared[1] else "its scores recorded under this protocol"
                reason = f"{reason} [champion version {_number(champion)}, {how}]"
            _record(client, name, version, promote, reason)
        return Decision(version, promote, reason, _number(champion), compared and compared[0].figures(),
                        bool(compared and compared[1]))
    raise DriftError(f"the champion of {name} changed {MAX_ATTEMPTS} times while version {version} was being "
                     f"decided: it stays undecided (the next run decides it, or drift registry decide -c CONFIG)")


def mark_failed(client: MlflowClient, name: str, version: str, reason: str) -> None:
    """Record that ``version`` will not be decided, and why."""
    client.set_model_version_tag(name, version, REASON, f"failed: {reason}"[:MAX_TAG])
    client.set_model_version_tag(name, version, DECISION, FAILED)


def run_in_progress(client: MlflowClient, version: ModelVersion) -> str | None:
    """How the run that registered ``version`` is still going, or None when it has ended (or its
    process is gone from this machine)."""
    run_id = version_run(version)
    if run_id is None:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    if run.info.status != "RUNNING" or orphaned(run.data.tags):
        return None
    return f"its run {run_id} is still running"


def settle_undecided(client: MlflowClient, name: str, protocol_id: str, rule, champion_scores: ChampionScores,
                     say=print) -> list[Decision]:
    """Decide the undecided versions of ``name`` measured under ``protocol_id``, oldest first; mark
    failed those that cannot be decided; leave those whose run is still going, and those measured
    under another protocol (the runs of that configuration decide them), saying so."""
    done = []
    for version in undecided(client, name):
        number = _number(version)
        busy = run_in_progress(client, version)
        if busy:
            say(f"{name} version {number} is undecided: {busy}; left to it")
            continue
        if PROTOCOL_ID not in version.tags:
            mark_failed(client, name, number, "registered without its evaluation (its run ended during registration)")
            say(f"{name} version {number} marked failed: registered without its evaluation")
            continue
        if version.tags[PROTOCOL_ID] != protocol_id:
            say(f"{name} version {number} is undecided, measured under protocol {version.tags[PROTOCOL_ID]} (this run: "
                f"{protocol_id}): a run of its configuration decides it (drift registry decide -c CONFIG), or give "
                f"it up: drift registry fail {name} {number}")
            continue
        scores, reference = recorded_scores(client, version, protocol_id), recorded_reference(version)
        if scores is None or reference is None:
            missing = "per-sample scores" if scores is None else "reference figures"
            mark_failed(client, name, number, f"its {missing} were not recorded")
            say(f"{name} version {number} marked failed: its {missing} were not recorded")
            continue
        say(f"deciding {name} version {number}, left undecided by its run")
        decision = decide(client, name, number, scores, reference, rule, champion_scores, say)
        say(f"{name} version {number}: {decision.reason}")
        done.append(decision)
    return done


def register_and_decide(name: str, model_dir: Path, sampler, tags: dict, candidate: SampleScores, reference: dict,
                        rule, champion_scores: ChampionScores, say=print) -> tuple[Decision, bool]:
    """Decide the versions earlier runs left undecided under the candidate's protocol, then register
    the candidate (in the active MLflow run, with ``tags`` and what its decision needs) and decide it.
    A model registered before under this protocol (the same content: an earlier run's model, reused
    after a failure) is not registered again: its version is decided, or its decision reported.
    Returns the decision and whether a new version was registered."""
    from mlops.model_registry import register_generator

    client = MlflowClient()
    settle_undecided(client, name, candidate.protocol_id, rule, champion_scores, say)
    digest = content_digest(model_dir)
    for version in reversed(versions(client, name)):
        same = (version.tags.get(DIGEST), version.tags.get(PROTOCOL_ID)) == (digest, candidate.protocol_id)
        if same and decided(version):
            say(f"this model is {name} version {version.version} already (registered by an earlier run), decided: "
                f"{decision_of(version)}")
            return Decision(_number(version), decision_of(version) == PROMOTED, version.tags.get(REASON, "")), False
    number = register_generator(name, model_dir, sampler, {**tags, **reference_tags(reference), DIGEST: digest,
                                                           DECISION: PENDING})
    return decide(client, name, str(number), candidate, reference, rule, champion_scores, say), True


def decided_digests(client: MlflowClient, name: str) -> set[str]:
    """The model digests of the versions of ``name`` that are no longer pending."""
    return {v.tags[DIGEST] for v in versions(client, name) if DIGEST in v.tags and decision_of(v) != PENDING}


def describe(client: MlflowClient, version: ModelVersion) -> str:
    """One line on an undecided version: when, by which run (and whether it still runs), under which
    protocol, what it was trained on."""
    tags = version.tags
    if PROTOCOL_ID not in tags:
        return f"version {version.version}: no tags (registered without its evaluation)"
    data = ", ".join(f"{k} {v}" for k, v in tags.items() if k.startswith("data.") and k != "data.git_revision")
    busy = run_in_progress(client, version)
    when = utc_time(int(version.creation_timestamp or 0))
    return (f"version {version.version}: registered {when} by run {version_run(version)} ({busy or 'ended'}), "
            f"protocol {tags[PROTOCOL_ID]}, model {tags.get(DIGEST, '?')[:12]}" + (f", {data}" if data else ""))


def settle_with_config(tracking_uri: str, cfg, say=print) -> list[Decision]:
    """``settle_undecided`` for the registered model and evaluation protocol of the run configuration
    ``cfg`` (`drift registry decide`): a champion measured otherwise is evaluated as a run would."""
    from drift.data.prompts import read_prompts, split_prompts
    from drift.evaluation.protocol import protocol_id, protocol_spec
    from mlops.version_scores import scores_under_protocol

    table = read_prompts(cfg.data.prompts, cfg.data.max_file_mb)
    pid = protocol_id(protocol_spec(cfg, split_prompts(table, cfg.data.eval_split)))
    client = MlflowClient(tracking_uri, tracking_uri)
    return settle_undecided(client, cfg.registry.model_name, pid, cfg.registry,
                            lambda version: scores_under_protocol(tracking_uri, version, cfg, table, pid), say)

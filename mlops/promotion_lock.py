"""The promotion lock: the right to move a registered model's `champion` alias, shared by every
process and machine that uses one MLflow registry.

The lock is the registered model ``<name>.promotion-lock``: creating a registered model is atomic in
MLflow's stores (the name is a primary key; a tracking server answers RESOURCE_ALREADY_EXISTS to the
second creator). Its tags name the holder: host, process id and a random token. The holder refreshes
it (a heartbeat: MLflow stamps ``last_updated_timestamp`` with the registry's own clock) every
quarter of the staleness limit while it holds it, and deletes it on release, after checking it is
still its own.

A waiter judges a lock stale

- at once when its holder ran on this machine and its process is gone (or is this very process,
  which no longer holds it: a release that failed),
- otherwise when the registry's clock says it has had no heartbeat for ``stale_after`` seconds. The
  registry's current time is read from ``<name>.promotion-clock``, a registered model the waiter
  updates; no machine's clock is compared with another's.

Breaking a stale lock renames it to a tombstone named after that lock (its creation time and token):
the store refuses the rename to all but the first of several breakers, and refuses it too when the
lock was meanwhile replaced by a live one, whose tombstone name would differ. Tombstones are left in
the registry as a record (``drift registry unlock`` lists and clears old ones).
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException

from drift.errors import DriftError
from mlops.recovery import process_alive

LOCK_SUFFIX, CLOCK_SUFFIX, TOMBSTONE = ".promotion-lock", ".promotion-clock", ".broken-"
HOST, PID, TOKEN = "holder.host", "holder.pid", "holder.token"
EXISTS, MISSING = "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"
REPORT_EVERY = 30.0  # seconds between "still waiting" lines

_held: set[str] = set()  # tokens of the locks this process holds now


def lock_name(name: str) -> str:
    return name + LOCK_SUFFIX


def utc_time(ms: int) -> str:
    """A registry timestamp (ms) as a UTC date and time."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class LockState:
    """A promotion lock as a waiter sees it."""

    name: str  # the lock's registered model
    host: str | None
    pid: int | None
    token: str | None
    created: int  # ms, registry clock
    heartbeat: int  # ms, registry clock: the last refresh
    problems: list[str] = field(default_factory=list)  # tags that cannot be read

    @classmethod
    def of(cls, model: RegisteredModel) -> LockState:
        tags, problems = model.tags, []
        pid = None
        try:
            pid = int(tags.get(PID, ""))
        except ValueError:
            problems.append(f"{PID}={tags.get(PID)!r}")
        for key in (HOST, TOKEN):
            if not tags.get(key):
                problems.append(f"{key}={tags.get(key)!r}")
        return cls(model.name, tags.get(HOST) or None, pid, tags.get(TOKEN) or None, int(model.creation_timestamp or 0),
                   int(model.last_updated_timestamp or model.creation_timestamp or 0), problems)

    @property
    def holder(self) -> str:
        who = f"process {self.pid if self.pid is not None else '?'} on {self.host or '?'}"
        return who + (f" (unreadable tags: {', '.join(self.problems)})" if self.problems else "")

    def stale(self, now: int, stale_after: float) -> str | None:
        """Why this lock is stale at registry time ``now`` (ms), or None while it is live."""
        if self.host == socket.gethostname() and self.pid is not None:
            if self.pid == os.getpid() and self.token not in _held:
                return f"it was left by this process ({self.pid}), which no longer holds it"
            if self.pid != os.getpid() and not process_alive(self.pid):
                return f"its holder, process {self.pid} on this machine ({self.host}), no longer exists"
        silent = (now - self.heartbeat) / 1000
        if silent > stale_after:
            return f"no heartbeat for {silent:.0f} s (registry clock; stale after {stale_after:g} s)"
        return None

    def describe(self, now: int) -> str:
        silent = (now - self.heartbeat) / 1000
        since = utc_time(self.created)
        return f"held by {self.holder} since {since}, last heartbeat {silent:.0f} s ago (registry clock)"


def registry_time(client: MlflowClient, name: str) -> int:
    """The registry's current time in ms: the update time it stamps on ``<name>.promotion-clock``."""
    clock = name + CLOCK_SUFFIX
    try:
        return int(client.update_registered_model(clock, f"the registry's clock for {name}'s promotion lock")
                   .last_updated_timestamp)
    except MlflowException as err:
        if err.error_code != MISSING:
            raise
    try:
        return int(client.create_registered_model(clock, description=f"the registry's clock for {name}'s "
                                                  "promotion lock").creation_timestamp)
    except MlflowException as err:
        if err.error_code != EXISTS:
            raise
    return registry_time(client, name)


def read_lock(client: MlflowClient, name: str) -> LockState | None:
    try:
        return LockState.of(client.get_registered_model(lock_name(name)))
    except MlflowException as err:
        if err.error_code == MISSING:
            return None
        raise


def break_lock(client: MlflowClient, state: LockState) -> bool:
    """Rename the lock ``state`` describes to its tombstone; False when another breaker did first, or
    the lock is no longer that one (released, or replaced by a new holder's)."""
    tombstone = f"{state.name}{TOMBSTONE}{state.created}-{state.token or 'unknown'}"
    try:
        client.rename_registered_model(state.name, tombstone)
    except MlflowException as err:
        if err.error_code in (EXISTS, MISSING) or not _is(client, state):
            return False  # another breaker first (a SQL store may report the race as a stale update)
        raise
    renamed = client.get_registered_model(tombstone)
    if int(renamed.creation_timestamp or 0) != state.created or renamed.tags.get(TOKEN) != state.token:
        # A newer lock renamed under the judged one's tombstone name: possible only once that
        # tombstone was cleared. Give it back (its holder reports the break if this fails).
        try:
            client.rename_registered_model(tombstone, state.name)
        except MlflowException:
            pass
        return False
    return True


def _is(client: MlflowClient, state: LockState) -> bool:
    """Whether the lock ``state`` describes is still there (not released, broken or replaced)."""
    try:
        current = client.get_registered_model(state.name)
    except MlflowException as err:
        if err.error_code == MISSING:
            return False
        raise
    return int(current.creation_timestamp or 0) == state.created and current.tags.get(TOKEN) == state.token


def _heartbeat(client: MlflowClient, lock: str, token: str, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        try:
            if client.get_registered_model(lock).tags.get(TOKEN) != token:
                return  # broken: not ours to refresh
            client.update_registered_model(lock, f"promotion in progress; heartbeat of {token}")
        except MlflowException:
            continue  # an unreachable registry: the next beat tries again


@contextmanager
def promotion_lock(client: MlflowClient, name: str, timeout: float = 600.0, stale_after: float = 120.0,
                   say=print):
    """Hold ``name``'s promotion lock for the body of the ``with``; wait at most ``timeout`` seconds
    for it, breaking it when it is stale. While waiting, ``say`` tells who holds it and how to clear it."""
    lock, token = lock_name(name), secrets.token_hex(8)
    tags = {HOST: socket.gethostname(), PID: str(os.getpid()), TOKEN: token}
    deadline, reported = time.monotonic() + timeout, None
    while True:
        try:
            client.create_registered_model(lock, tags=tags, description=f"promotion of {name} in progress "
                                           f"(process {tags[PID]} on {tags[HOST]}); deleted when done")
            break
        except MlflowException as err:
            if err.error_code != EXISTS:
                raise
        state = read_lock(client, name)
        if state is None:
            continue  # released meanwhile
        now = registry_time(client, name)
        why = state.stale(now, stale_after)
        if why is not None:
            if break_lock(client, state):
                say(f"broke the promotion lock {lock} ({state.holder}, since {utc_time(state.created)}): {why}")
            continue
        waited = timeout - (deadline - time.monotonic())
        if time.monotonic() > deadline:
            raise DriftError(f"could not acquire the promotion lock {lock} within {timeout:.0f} s: "
                             f"{state.describe(now)}. {_how_to_clear(name, stale_after)}")
        if reported is None or time.monotonic() - reported > REPORT_EVERY:
            say(f"waiting for the promotion lock {lock} ({waited:.0f} s of {timeout:.0f}): {state.describe(now)}. "
                f"{_how_to_clear(name, stale_after)}")
            reported = time.monotonic()
        time.sleep(0.2 + random.random() * 0.3)
    _held.add(token)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(client, lock, token, stale_after / 4, stop), daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        _release(client, name, token, say)


def _how_to_clear(name: str, stale_after: float) -> str:
    return (f"It is broken after {stale_after:g} s without a heartbeat, or at once when its holder's process is "
            f"gone from this machine; if that process is gone, clear it now: drift registry unlock {name}")


def _release(client: MlflowClient, name: str, token: str, say) -> None:
    _held.discard(token)
    state = read_lock(client, name)
    if state is None or state.token != token:
        say(f"the promotion lock {lock_name(name)} was broken while this process held it "
            f"({'now ' + state.holder if state else 'now free'}): it is left as it is")
        return
    try:
        client.delete_registered_model(lock_name(name))
    except MlflowException as err:
        if err.error_code != MISSING:
            raise


def tombstones(client: MlflowClient, name: str) -> list[RegisteredModel]:
    """The broken locks of ``name`` left in the registry."""
    prefix = lock_name(name) + TOMBSTONE
    return [m for m in client.search_registered_models(f"name LIKE '{prefix}%'") if m.name.startswith(prefix)]


TOMBSTONE_KEPT = 3600.0  # seconds a tombstone stays, so that a late breaker of its lock finds the name taken


def unlock(client: MlflowClient, name: str, force: bool = False, stale_after: float = 120.0) -> str:
    """Break ``name``'s promotion lock for an operator: a stale one (the rules of ``LockState.stale``),
    or with ``force`` any; tombstones older than an hour are cleared too. Returns what was done."""
    now = registry_time(client, name)
    old = [m for m in tombstones(client, name) if (now - int(m.last_updated_timestamp or 0)) / 1000 > TOMBSTONE_KEPT]
    for model in old:
        client.delete_registered_model(model.name)
    cleared = f" (cleared {len(old)} tombstone(s) of locks broken over an hour ago)" if old else ""
    state = read_lock(client, name)
    if state is None:
        return f"{name} has no promotion lock{cleared}"
    why = state.stale(now, stale_after)
    if why is None and not force:
        raise DriftError(f"the promotion lock of {name} is live, {state.describe(now)}: that run may be promoting "
                         "now. Wait for it, or break the lock anyway with --force")
    if not break_lock(client, state):
        return f"the promotion lock of {name} changed meanwhile (released, or broken by another process){cleared}"
    return f"broke the promotion lock of {name}, {state.describe(now)}: {why or 'forced'}{cleared}"

"""Who may answer on the labelling page.

On this machine alone (127.0.0.1) the page may stay open: a rater types a name. Bound beyond it,
every API request needs credentials, sent as ``Authorization: Bearer TOKEN`` (the page keeps the
token in the browser's storage once the rater has entered it; it is never part of a URL, so it
stays out of server and proxy logs and browser history):

- a shared token: every rater uses it and types their name; or
- per-rater invite tokens: each token is one rater's, and the rater recorded is the token's, whatever
  name a request carries.

Tokens come from the start-up options or the environment (``DRIFT_LABEL_TOKEN`` for a shared token,
``DRIFT_LABEL_RATER_TOKENS`` for ``name=token`` entries separated by commas); a rater named without
a token is given a fresh one, printed at start-up for the organiser to send.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from drift.errors import DriftError

TOKEN_ENV = "DRIFT_LABEL_TOKEN"
RATER_TOKENS_ENV = "DRIFT_LABEL_RATER_TOKENS"
MIN_TOKEN_LENGTH = 16
MAX_RATER_LENGTH = 64
OPEN, SHARED, PER_RATER = "open", "shared", "rater"


class LabelError(DriftError):
    """A request the page should not have sent (no rater name, an unknown choice)."""


class Unauthorized(LabelError):
    """A request without valid credentials."""


def check_rater(name) -> str:
    """The rater's name as recorded in the annotator column, or a LabelError saying what is wrong."""
    name = str(name or "").strip()
    if not name:
        raise LabelError("enter your name before choosing: it is recorded with every choice")
    if len(name) > MAX_RATER_LENGTH or not name.isprintable():
        raise LabelError(f"a rater name is printable text of at most {MAX_RATER_LENGTH} characters")
    return name


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_token(token: str, what: str) -> str:
    if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or " " in token:
        raise DriftError(f"{what} must be at least {MIN_TOKEN_LENGTH} printable characters without spaces "
                         "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
    return token


@dataclass
class Access:
    """The credentials a server accepts: none (open), one shared token, or a token per rater."""

    shared: str | None = None
    raters: dict[str, str] = field(default_factory=dict)  # rater name -> token
    generated: list[str] = field(default_factory=list)  # raters whose token was made here

    @property
    def mode(self) -> str:
        return PER_RATER if self.raters else SHARED if self.shared else OPEN

    def rater(self, token: str | None, name: str | None = None) -> str | None:
        """The rater a request acts as: the token's own rater, or (open or shared) the name it
        carries, checked; None when it carries none. Unauthorized without valid credentials."""
        token = str(token or "")
        if self.mode == PER_RATER:
            for rater, expected in self.raters.items():
                if hmac.compare_digest(token.encode(), expected.encode()):
                    return rater
            raise Unauthorized("sign in with your invite token" if not token else "this token is not valid here")
        if self.mode == SHARED and not hmac.compare_digest(token.encode(), self.shared.encode()):
            raise Unauthorized("sign in with the team's token" if not token else "this token is not valid here")
        return check_rater(name) if str(name or "").strip() else None

    def describe(self, url: str) -> str:
        """How raters get in, for the start-up line (with the tokens made here, for the organiser)."""
        if self.mode == OPEN:
            return f"open to anyone on this machine: raters type their name at {url}"
        if self.mode == SHARED:
            return f"raters open {url}, enter the team's token (the one given at start-up) and type their name"
        lines = [f"raters open {url} and enter their own invite token; answers are recorded under its rater "
                 f"({', '.join(self.raters)})"]
        lines += [f"    invite for {name}: {self.raters[name]}" for name in self.generated]
        return "\n  ".join(lines)


def access_for(host: str, shared: str | None = None, raters: Sequence[str] = (),
               environ: Mapping[str, str] = os.environ) -> Access:
    """The access a server on ``host`` grants. ``shared`` (else $DRIFT_LABEL_TOKEN) is a team token;
    ``raters`` (else $DRIFT_LABEL_RATER_TOKENS, comma-separated) are ``name=token`` or ``name`` (a
    token is made). Beyond this machine, credentials are required."""
    shared = shared or environ.get(TOKEN_ENV) or None
    entries = list(raters) or [e for e in environ.get(RATER_TOKENS_ENV, "").split(",") if e.strip()]
    if shared and entries:
        raise DriftError("give either a shared token or per-rater tokens, not both")
    access = Access(_check_token(shared, "the shared token") if shared else None)
    for entry in entries:
        name, sep, token = entry.partition("=")
        name = check_rater(name)
        if name in access.raters:
            raise DriftError(f"rater {name!r} is given twice")
        if not sep:
            token = secrets.token_urlsafe(18)
            access.generated.append(name)
        access.raters[name] = _check_token(token.strip(), f"the token of rater {name!r}")
    if len(set(access.raters.values())) != len(access.raters):
        raise DriftError("two raters have the same token: each rater needs their own")
    if access.mode == OPEN and not is_loopback(host):
        raise DriftError(f"--host {host} lets anyone who can reach the port write preference data: give raters "
                         f"credentials (--token, or ${TOKEN_ENV}: a shared token; --rater NAME[=TOKEN], or "
                         f"${RATER_TOKENS_ENV}: one token per rater), or serve on 127.0.0.1")
    return access

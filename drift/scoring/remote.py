"""A reward served over HTTP: the ``remote`` reward term (arguments: drift.config.RemoteRewardSettings).

Images travel as 8-bit PNG (drift.scoring.png) with their prompts; one score per image comes back.
Two protocols:

``mlflow``  MLflow's scoring server (`mlflow models serve`): POST URL/invocations with
            {"dataframe_split": {"columns": ["prompt", "image_png_base64"], "data": [[prompt, png], ...]}}
            or {"dataframe_records": [{"prompt": ..., "image_png_base64": ...}, ...]}; the answer is
            {"predictions": [...]}, one per row: a number, or a record with "score" and, from the
            registered reward model (mlops.pyfunc_model.RewardModel), "model_digest".
``chat``    an OpenAI-compatible chat completions endpoint (vLLM, SGLang) serving a vision-language
            judge: POST URL/chat/completions, one image per request, as a user message holding the
            image as a data URL and the instruction with the prompt. The score is the expected
            rating under the probabilities of the rating tokens (the top_logprobs of the first answer
            token that is a rating token), or the first number of the answer.

Requests run ``concurrency`` at a time. One that fails with a connection error, a timeout or HTTP
408, 429 or 5xx is tried again after an exponential backoff; when its retries are spent, or the
service answers outside its protocol, the run stops with RewardServiceError naming the URL and the
last error. No score is ever made up in place of a missing one.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import torch
from pydantic import ValidationError

from drift.config import RemoteRewardSettings, RewardTerm, describe_validation_error
from drift.errors import ConfigError, RewardServiceError
from drift.registry import REWARDS
from drift.scoring import png

REMOTE = "remote"
IMAGE_COLUMN = "image_png_base64"
RETRIED_STATUS = {408, 429, 500, 502, 503, 504}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def settings(args: dict) -> RemoteRewardSettings:
    try:
        return RemoteRewardSettings.model_validate(args)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, f"the arguments of the '{REMOTE}' reward term")) from None


def served_identity(args: dict) -> dict:
    """What decides a served reward's scores, for the evaluation protocol: the protocol, the served
    model and its version (and a judge's instruction and scoring), not where it runs."""
    s = settings(args)
    if s.protocol == "mlflow":
        return {"protocol": "mlflow", "model": s.model, "version": s.model.rsplit("/", 1)[1]}
    scoring = {"instruction": s.instruction, "score_from": s.score_from}
    if s.score_from == "logprobs":
        scoring["ratings"] = s.ratings
    return {"protocol": "chat", "model": s.model, "version": s.revision, **scoring}


def term_identity(term: RewardTerm) -> dict:
    """A ``remote`` reward term as it enters the evaluation protocol's identity."""
    return {"name": term.name, "weight": term.weight, "args": served_identity(term.args)}


class _Stopped(Exception):
    """Another request of the batch failed: this one gives up without waiting out its retries."""


class RemoteReward:
    """Scores (images, prompts) through a reward service; a Reward (drift.scoring.protocols)."""

    def __init__(self, s: RemoteRewardSettings):
        self.s = s
        self.endpoint = s.url.rstrip("/") + ("/invocations" if s.protocol == "mlflow" else "/chat/completions")
        self.headers = {"Content-Type": "application/json", **self._credential()}

    def _credential(self) -> dict[str, str]:
        s = self.s
        if s.auth_env is None:
            return {}
        value = os.environ.get(s.auth_env)
        if not value:
            raise ConfigError(f"the '{REMOTE}' reward term reads its credential from the environment variable "
                              f"{s.auth_env} (auth_env), which is not set: export it, or on a ZenML stack expose a "
                              "secret with that key to the steps (docs/real_models.md, 'Rewards served over HTTP')")
        return {s.auth_header: f"{s.auth_scheme} {value}" if s.auth_scheme else value}

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        encoded = png.encode(images)
        size = self.s.batch_size if self.s.protocol == "mlflow" else 1
        chunks = [slice(i, i + size) for i in range(0, len(encoded), size)]
        if not chunks:
            return torch.zeros(0)
        score = self._score_rows if self.s.protocol == "mlflow" else self._score_chat
        stop = threading.Event()
        pool = ThreadPoolExecutor(min(self.s.concurrency, len(chunks)), thread_name_prefix="reward-service")
        try:
            futures = [pool.submit(score, list(prompts[c]), encoded[c], stop) for c in chunks]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                if future in done and future.exception() is not None:
                    raise future.exception()
            return torch.tensor([x for future in futures for x in future.result()], dtype=torch.float32)
        finally:
            stop.set()  # requests still in flight give up at their next retry
            pool.shutdown(wait=False, cancel_futures=True)

    def _post(self, body: dict, stop: threading.Event):
        data = json.dumps(body).encode()
        start, last = time.monotonic(), None
        for attempt in range(self.s.retries + 1):
            if attempt and stop.wait(self.s.backoff * 2 ** (attempt - 1)):
                raise _Stopped
            request = urllib.request.Request(self.endpoint, data=data, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.s.timeout) as response:
                    text = response.read()
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}: {err.read()[:300].decode(errors='replace').strip()}"
                if err.code not in RETRIED_STATUS:
                    raise self._error(f"refused the request ({last})") from None
                continue
            except (OSError, http.client.HTTPException) as err:
                last = f"{type(err).__name__}: {getattr(err, 'reason', None) or err}"
                continue
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise self._error(f"answered with something other than JSON: {text[:200]!r}") from None
        raise self._error(f"did not answer after {self.s.retries + 1} attempts over {time.monotonic() - start:.0f} s "
                          f"(last error: {last}). Start it again at this URL and run the same configuration "
                          "again: the run resumes from its last checkpoint")

    def _error(self, what: str) -> RewardServiceError:
        return RewardServiceError(f"reward service {self.endpoint} ({self.s.model}) {what}")

    def _score_rows(self, prompts: list[str], images: list[str], stop: threading.Event) -> list[float]:
        if self.s.format == "split":
            rows = [list(row) for row in zip(prompts, images)]
            body = {"dataframe_split": {"columns": ["prompt", IMAGE_COLUMN], "data": rows}}
        else:
            body = {"dataframe_records": [{"prompt": p, IMAGE_COLUMN: i} for p, i in zip(prompts, images)]}
        answer = self._post(body, stop)
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list) or len(predictions) != len(images):
            count = len(predictions) if isinstance(predictions, list) else "no"
            raise self._error(f"answered {count} predictions for {len(images)} images: {str(answer)[:200]}")
        scores = []
        for row in predictions:
            if isinstance(row, dict):
                if self.s.digest is not None and row.get("model_digest") != self.s.digest:
                    raise self._error(f"serves a model with digest {row.get('model_digest')}, not {self.s.digest}: "
                                      f"serve {self.s.model} at this URL")
                row = row.get("score")
            scores.append(self._number(row))
        return scores

    def _number(self, value) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._error(f"answered a score that is not a number: {value!r}")
        return float(value)

    def _score_chat(self, prompts: list[str], images: list[str], stop: threading.Event) -> list[float]:
        s = self.s
        (prompt,), (image,) = prompts, images
        content = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                   {"type": "text", "text": s.instruction.replace("{prompt}", prompt)}]
        body = {"model": s.model, "max_tokens": s.max_tokens, "temperature": 0.0,
                "messages": [{"role": "user", "content": content}]}
        if s.score_from == "logprobs":
            body.update(logprobs=True, top_logprobs=s.top_logprobs)
        answer = self._post(body, stop)
        try:
            choice = answer["choices"][0]
            if s.score_from == "answer":
                return [self._answer_score(choice["message"]["content"])]
            return [self._expected_rating(choice["logprobs"]["content"])]
        except (KeyError, IndexError, TypeError):
            raise self._error(f"answered outside the chat completions protocol: {str(answer)[:300]}") from None

    def _answer_score(self, content: str) -> float:
        match = NUMBER.search(content or "")
        if match is None:
            raise self._error(f"answered without a number: {content!r}")
        return float(match.group())

    def _expected_rating(self, tokens: list[dict]) -> float:
        ratings = self.s.ratings
        for token in tokens:
            if token["token"].strip() not in ratings:
                continue
            alternatives = {alt["token"]: alt["logprob"] for alt in token.get("top_logprobs") or []}
            alternatives.setdefault(token["token"], token["logprob"])
            mass = {}
            for text, logprob in alternatives.items():
                if text.strip() in ratings:  # "4" and " 4" are one rating
                    mass[text.strip()] = mass.get(text.strip(), 0.0) + math.exp(logprob)
            return sum(p * ratings[r] for r, p in mass.items()) / sum(mass.values())
        answer = "".join(t["token"] for t in tokens)
        raise self._error(f"answered {answer!r}: none of its tokens is a rating ({', '.join(ratings)})")


@REWARDS.register(REMOTE)
def remote_reward(device="cpu", **args):
    """Scores from a reward service (drift.config.RemoteRewardSettings); they arrive on the CPU."""
    return RemoteReward(settings(args))

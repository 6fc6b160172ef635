"""Rewards served over HTTP: the registered reward head served by a real `mlflow models serve`
scores training as the same head does in-process (on the same 8-bit images); a service that goes
down stops the run with its URL and last error, and the run resumes from its checkpoint once the
service is back at the same address; the chat protocol against a stand-in judge."""

import base64
import io
import json
import math
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from drift.build import build_parts
from drift.errors import ConfigError, ModelNotFoundError, RewardServiceError
from drift.evaluation.protocol import protocol_spec
from drift.registry import EMBEDDINGS, REWARDS
from drift.scoring import packaged, png
from drift.scoring.preference_head import fit_bradley_terry
from drift.training.run import run_training
from mlops.reward_model import download_reward_head, register_reward
from tests.conftest import BIN, ROOT, _free_port, small_config

NAME = "served-head"


def serve(model_uri: str, port: int, tracking_uri: str, log) -> subprocess.Popen:
    """`mlflow models serve` of ``model_uri`` on 127.0.0.1:``port``, once it answers /ping."""
    # the scoring server is started as `uvicorn` from PATH: the virtualenv's, however pytest was run
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(ROOT),
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "--env-manager", "local", "-m", model_uri,
                             "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                if response.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            stop(proc)
            raise RuntimeError(f"mlflow models serve did not start: {open(log.name).read()[-3000:]}")
        time.sleep(0.3)


def stop(proc: subprocess.Popen) -> None:
    """Stop the server and its workers (its whole process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def served(testbed, tmp_path_factory):
    """A preference head fitted and registered as the retraining pipeline does (bolder strokes
    preferred, on the classifier's features), served on a free port of 127.0.0.1."""
    from drift.data.preferences import bold_strokes_choice

    root = tmp_path_factory.mktemp("served")
    cfg = small_config(testbed, preferences={"reward_model_name": NAME})
    embed = EMBEDDINGS.build(cfg.embedding.name, **cfg.embedding.args)
    images = torch.from_numpy(np.load(testbed["images"])["images"][:400])
    a, b = images[:200], images[200:]
    head = fit_bradley_terry(embed(a), embed(b), [bold_strokes_choice(x, y) for x, y in zip(a, b)], epochs=100)
    head.save_pretrained(root / "head")
    term = cfg.preference_term(root / "head")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run():
            version, digest = register_reward(NAME, term, {"embedding": cfg.embedding.name})
        MlflowClient(uri, uri).set_registered_model_alias(NAME, "champion", version)  # as the retraining step does
    finally:
        mlflow.set_tracking_uri(previous)
    port = _free_port()
    log = open(root / "serve.log", "w")
    model_uri = f"models:/{NAME}/{version}"
    state = {"proc": serve(model_uri, port, uri, log)}
    yield {"term": term, "model": model_uri, "digest": digest, "url": f"http://127.0.0.1:{port}", "tracking_uri": uri,
           "restart": lambda: state.update(proc=serve(model_uri, port, uri, log)),
           "stop": lambda: stop(state["proc"])}
    stop(state["proc"])
    log.close()


def remote_config(testbed, served, run_dir, **args):
    term = {"name": "remote", "args": {"url": served["url"], "protocol": "mlflow", "model": served["model"],
                                       "digest": served["digest"], "batch_size": 3, **args}}
    clf = {"checkpoint": str(testbed["root"] / "classifier")}
    return small_config(testbed, **{
        "reward": [{"name": "digit_margin", "args": clf}, term], "train.iterations": 2, "sampling.group_size": 4,
        "sampling.prompts_per_iteration": 2, "sampling.num_steps": 4, "sampling.sde_window": {"size": None},
        "eval.every": 0, "eval.num_prompts": 2,
        "eval.samples_per_prompt": 4, "eval.coverage": None, "checkpoint.every": 1, "run.output_dir": str(run_dir)})


def recording(parts):
    """Wrap the run's remote term so that every batch it scores is kept: (images, prompts, scores)."""
    calls = []
    name, weight, served = parts.reward.terms[1]

    def record(images, prompts):
        scores = served(images, prompts)
        calls.append((images.clone(), list(prompts), scores))
        return scores

    parts.reward.terms[1] = (name, weight, record)
    return calls


def test_served_head_scores_training_as_the_head_does_in_process(testbed, served, tmp_path):
    cfg = remote_config(testbed, served, tmp_path)
    parts = build_parts(cfg)
    calls = recording(parts)
    run = run_training(cfg, tmp_path / "run", parts, progress=False)
    assert run.trainer.iteration == 2 and len(calls) == 4  # evaluation, 2 rollouts, evaluation
    in_process = REWARDS.build("preference", **served["term"].args)
    for images, prompts, scores in calls:
        assert len(scores) == len(prompts) == 8  # three requests each
        torch.testing.assert_close(scores, in_process(png.quantize(images), prompts), atol=1e-5, rtol=1e-5)
        assert not torch.equal(scores, in_process(images, prompts))  # the 8-bit images are what is compared

    spec = protocol_spec(cfg, parts.eval_prompts)
    assert spec["reward"][1] == {"name": "remote", "weight": 1.0,
                                 "args": {"protocol": "mlflow", "model": served["model"], "version": "1"}}
    port = served["url"].rsplit(":", 1)[1]
    assert port not in json.dumps(spec) and "127.0.0.1" not in json.dumps(spec)

    # the retraining step finds the champion's head in a downloaded version
    head, _ = download_reward_head(served["tracking_uri"], NAME, tmp_path / "download")
    weights = (head / "model.safetensors").read_bytes()
    assert weights == (Path(served["term"].args["head"]) / "model.safetensors").read_bytes()

    request = urllib.request.Request(f"{served['url']}/invocations", method="POST", headers={
        "Content-Type": "application/json"}, data=json.dumps({"dataframe_records": [
            {"prompt": "a handwritten digit three", "image_png_base64": "bm90IGEgcG5n"}]}).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 400 and "image 0 is not a base64 PNG" in refused.value.read().decode()

    other = REWARDS.build("remote", **{**cfg.reward[1].args, "digest": "sha256:0000"})
    with pytest.raises(RewardServiceError, match=rf"{served['url']}/invocations .* serves a model with digest "
                                                  rf"{served['digest']}, not sha256:0000"):
        other(calls[0][0], calls[0][1])


def test_service_down_stops_the_run_which_resumes_when_it_is_back(testbed, served, tmp_path):
    cfg = remote_config(testbed, served, tmp_path, retries=2, backoff=0.2, timeout=10, format="records")
    parts = build_parts(cfg)

    def stop_after_first(metrics, iteration):
        if iteration == 1 and "reward_mean" in metrics:
            served["stop"]()

    try:
        with pytest.raises(RewardServiceError) as err:
            run_training(cfg, tmp_path / "run", parts, callback=stop_after_first, progress=False)
        message = str(err.value)
        assert f"reward service {served['url']}/invocations ({served['model']}) did not answer after 3 attempts" \
            in message and "last error: URLError: [Errno 111] Connection refused" in message, message
    finally:
        served["restart"]()
    run = run_training(cfg, tmp_path / "run", build_parts(cfg), progress=False)
    assert run.resumed_from.name == "iter_000001" and run.trainer.iteration == 2


class Judge(BaseHTTPRequestHandler):
    """A stand-in for a vision-language judge behind vLLM's chat completions: it rates an image by
    its brightness, p(rating r) proportional to exp(-(r - target)^2), target = 1 + 4 * mean, and
    answers "Rating: r" with the rating most likely."""

    requests: list = []
    fail_first = 0
    in_flight = 0
    most_in_flight = 0
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_POST(self):
        cls = type(self)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with cls.lock:
            cls.in_flight += 1
            cls.most_in_flight = max(cls.most_in_flight, cls.in_flight)
            cls.requests.append((self.path, dict(self.headers), body))
            failing = len(cls.requests) <= cls.fail_first
        time.sleep(0.05)
        with cls.lock:
            cls.in_flight -= 1
        if self.headers.get("Authorization") != "Bearer s3cret":
            return self.answer(401, {"error": "unauthorised"})
        if failing:
            return self.answer(503, {"error": "loading"})
        url = body["messages"][0]["content"][0]["image_url"]["url"]
        image = Image.open(io.BytesIO(base64.b64decode(url.removeprefix("data:image/png;base64,"))))
        target = 1 + 4 * np.asarray(image).mean() / 255
        logprobs = {str(r): -((r - target) ** 2) for r in range(1, 6)}
        best = max(logprobs, key=logprobs.get)
        tokens = [{"token": "Rating", "logprob": -0.01, "top_logprobs": []},
                  {"token": ":", "logprob": -0.01, "top_logprobs": []},
                  {"token": f" {best}", "logprob": logprobs[best],
                   "top_logprobs": [{"token": f" {r}", "logprob": lp} for r, lp in logprobs.items()] +
                                   [{"token": "The", "logprob": -1.0}]}]
        self.answer(200, {"choices": [{"message": {"role": "assistant", "content": f"Rating: {best}"},
                                       "logprobs": {"content": tokens}}]})

    def answer(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def judge(monkeypatch):
    monkeypatch.setattr(Judge, "requests", [])
    monkeypatch.setattr(Judge, "most_in_flight", 0)
    monkeypatch.setenv("JUDGE_TOKEN", "s3cret")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def chat_reward(url, **args):
    fixed = {"url": url, "protocol": "chat", "model": "stand-in/judge-7b", "revision": "abc123",
             "auth_env": "JUDGE_TOKEN", "concurrency": 4, "backoff": 0.05}
    return REWARDS.build("remote", **{**fixed, **args})


def test_chat_protocol_against_a_stand_in_judge(judge, monkeypatch):
    images = torch.rand(8, 3, 16, 16)
    prompts = [f"a photo of thing {i}" for i in range(8)]
    scores = chat_reward(judge)(images, prompts)
    targets = (1 + 4 * png.quantize(images).mean(dim=(1, 2, 3))).tolist()
    for score, target in zip(scores, targets):
        weights = {r: math.exp(-((r - target) ** 2)) for r in range(1, 6)}
        assert float(score) == pytest.approx(sum(r * w for r, w in weights.items()) / sum(weights.values()), abs=1e-4)
    path, headers, body = Judge.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "stand-in/judge-7b" and body["logprobs"] is True
    assert body["top_logprobs"] == 20 and headers["Authorization"] == "Bearer s3cret"
    text = body["messages"][0]["content"][1]["text"]
    assert any(f'prompt: "{p}"' in text for p in prompts)
    assert len(Judge.requests) == 8 and Judge.most_in_flight > 1  # one image per request, several in flight

    answered = chat_reward(judge, score_from="answer")(images, prompts)
    assert answered.tolist() == [float(min(range(1, 6), key=lambda r: abs(r - t))) for t in targets]
    assert "logprobs" not in Judge.requests[-1][2]

    Judge.requests.clear()
    monkeypatch.setattr(Judge, "fail_first", 2)  # a service still loading: retried with backoff
    assert torch.equal(chat_reward(judge, concurrency=1)(images[:1], prompts[:1]), scores[:1])
    assert len(Judge.requests) == 3

    monkeypatch.setattr(Judge, "fail_first", 10**6)
    with pytest.raises(RewardServiceError, match=rf"reward service {judge}/chat/completions \(stand-in/judge-7b\) "
                                                  r"did not answer after 3 attempts .*last error: HTTP 503"):
        chat_reward(judge, retries=2)(images[:1], prompts[:1])

    Judge.requests.clear()
    monkeypatch.setenv("JUDGE_TOKEN", "wrong")
    with pytest.raises(RewardServiceError, match=r"refused the request \(HTTP 401"):
        chat_reward(judge)(images[:1], prompts[:1])
    assert len(Judge.requests) == 1  # not retried
    monkeypatch.delenv("JUDGE_TOKEN")
    with pytest.raises(ConfigError, match="environment variable JUDGE_TOKEN"):
        chat_reward(judge)
    alias = "with protocol mlflow, name a registered version.* \\(got 'models:/head@champion'\\)"
    with pytest.raises(ConfigError, match=rf"  model: Value error, {alias}"):
        REWARDS.build("remote", url=judge, protocol="mlflow", model="models:/head@champion")


def test_a_large_local_file_is_referenced_by_digest_not_stored(tmp_path, monkeypatch):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"x" * 100)
    monkeypatch.setattr(packaged, "STORE_LIMIT", 10)
    package = packaged.package_term("digit_margin", {"checkpoint": str(weights)}, tmp_path / "package")
    assert [p.name for p in package.iterdir()] == ["term.json"]
    assert packaged.packaged_args(package) == ("digit_margin", {"checkpoint": str(weights)})
    weights.write_bytes(b"y" * 100)
    with pytest.raises(ModelNotFoundError, match=r"references .*weights.bin with digest sha256:\w+, but that file "
                                                 r"has digest sha256:\w+"):
        packaged.packaged_args(package)

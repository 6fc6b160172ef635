"""The labelling page's web server (standard library only): one HTML page and a small JSON API.

    GET  /                  the page (static/index.html)
    GET  /api/info          the model, the number of prompts, where the data goes
    GET  /api/pair?rater=R  a new pair {token, prompt, image_a, image_b} plus progress {total, mine}
    POST /api/choice        {token, choice: first|second|tie|skip, rater} -> {recorded, total, mine}
    POST /api/dvc           `dvc add` the preference folder now -> {ok, message}

Each request runs in its own thread; LabelSession does the locking. POST bodies must be JSON
(application/json), which a page from another site cannot send to it without the browser asking
first, and this server never says yes.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from urllib.parse import parse_qs, urlparse

from mlops.labelling.session import AnsweredError, LabelError, LabelSession, dvc_add

MAX_BODY = 64 * 1024


class LabelServer(ThreadingHTTPServer):
    daemon_threads = True  # a rater's open connection never keeps the server from stopping

    def __init__(self, session: LabelSession, host: str = "127.0.0.1", port: int = 0):
        self.session = session
        super().__init__((host, port), LabelHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class LabelHandler(BaseHTTPRequestHandler):
    server: LabelServer
    server_version = "drift-label"

    def do_GET(self) -> None:
        url = urlparse(self.path)
        session = self.server.session
        if url.path in ("/", "/index.html"):
            page = files("mlops.labelling").joinpath("static", "index.html").read_bytes()
            self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        elif url.path == "/api/info":
            self._json(HTTPStatus.OK, session.describe())
        elif url.path == "/api/pair":
            rater = parse_qs(url.query).get("rater", [""])[0]
            try:
                pair = session.next_pair()
            except Exception as err:  # the page shows it and retries; the server keeps serving
                self.log_error("could not draw a pair: %r", err)
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"could not draw a pair: {err}"})
                return
            self._json(HTTPStatus.OK, {**pair, **session.progress(rater)})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})

    def do_POST(self) -> None:
        session = self.server.session
        try:
            body = self._body()
            if self.path == "/api/choice":
                recorded = session.answer(body.get("token", ""), body.get("choice", ""), body.get("rater", ""))
                if recorded:
                    self.log_message("recorded %s: %s by %s", recorded, body["choice"], body["rater"])
                self._json(HTTPStatus.OK, {"recorded": recorded, **session.progress(body.get("rater"))})
            elif self.path == "/api/dvc":
                ok, message = dvc_add(session.out)
                self.log_message("%s", message)
                self._json(HTTPStatus.OK, {"ok": ok, "message": message})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path}"})
        except AnsweredError as err:
            self._json(HTTPStatus.CONFLICT, {"error": str(err)})
        except LabelError as err:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
        except OSError as err:
            self.log_error("could not write the preference data: %s", err)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"could not write the preference data: {err}"})

    def _body(self) -> dict:
        if self.headers.get_content_type() != "application/json":
            raise LabelError("send the request body as application/json")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise LabelError(f"request body over {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LabelError("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise LabelError("the request body must be a JSON object")
        return body

    def _json(self, status: HTTPStatus, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-") -> None:
        """Silent: the log keeps choices, versioning and errors, which a line per request would drown."""

"""The labelling page's web server (standard library only): one HTML page and a small JSON API.

    GET  /                  the page (static/index.html)
    GET  /api/info          how raters sign in; with credentials: the model, the prompt count, where the data goes
    GET  /api/pair?rater=R  a new pair {token, prompt, image_a, image_b} plus progress {total, mine}
    POST /api/choice        {token, choice: first|second|tie|skip, rater} -> {recorded, undo, total, mine}
    POST /api/undo          {undo, rater} -> {undone, total, mine}: the rater's answer with that handle removed
    POST /api/dvc           `dvc add` the preference folder now -> {ok, message}

Each request runs in its own thread; LabelSession does the locking. API requests carry the rater's
credentials in ``Authorization: Bearer TOKEN`` where the server requires them (mlops.labelling.access):
without valid ones they get 401 and change nothing. POST bodies must be JSON (application/json),
which a page from another site cannot send to it without the browser asking first, and this server
never says yes.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from urllib.parse import parse_qs, urlparse

from mlops.labelling.access import Access, LabelError, Unauthorized
from mlops.labelling.session import AnsweredError, LabelSession

MAX_BODY = 64 * 1024


class LabelServer(ThreadingHTTPServer):
    daemon_threads = True  # a rater's open connection never keeps the server from stopping

    def __init__(self, session: LabelSession, host: str = "127.0.0.1", port: int = 0, access: Access | None = None):
        self.session, self.access = session, access or Access()
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
            return
        try:
            if url.path == "/api/info":
                rater = self._rater()
                self._json(HTTPStatus.OK, {**session.describe(), "access": self.server.access.mode, "rater": rater})
            elif url.path == "/api/pair":
                rater = self._rater(parse_qs(url.query).get("rater", [""])[0])
                try:
                    pair = session.next_pair()
                except Exception as err:  # the page shows it and retries; the server keeps serving
                    self.log_error("could not draw a pair: %r", err)
                    self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"could not draw a pair: {err}"})
                    return
                self._json(HTTPStatus.OK, {**pair, **session.progress(rater)})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})
        except Unauthorized as err:
            self._unauthorized(err)
        except LabelError as err:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})

    def do_POST(self) -> None:
        session = self.server.session
        try:
            if self.path not in ("/api/choice", "/api/undo", "/api/dvc"):
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path}"})
                return
            body = self._body()
            rater = self._rater(body.get("rater"))
            if self.path == "/api/choice":
                recorded = session.answer(body.get("token", ""), body.get("choice", ""), rater)
                if recorded:
                    self.log_message("recorded %s: %s by %s", recorded["pair_id"], body["choice"], rater)
                self._json(HTTPStatus.OK, {"recorded": recorded and recorded["pair_id"],
                                           "undo": recorded and recorded["undo"], **session.progress(rater)})
            elif self.path == "/api/undo":
                undone = session.undo(body.get("undo", ""), rater)
                self.log_message("undid %s by %s", undone, rater)
                self._json(HTTPStatus.OK, {"undone": undone, **session.progress(rater)})
            else:
                ok, message = session.version()
                self.log_message("%s", message)
                self._json(HTTPStatus.OK, {"ok": ok, "message": message})
        except Unauthorized as err:
            self._unauthorized(err)
        except AnsweredError as err:
            self._json(HTTPStatus.CONFLICT, {"error": str(err)})
        except LabelError as err:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
        except OSError as err:
            self.log_error("could not write the preference data: %s", err)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"could not write the preference data: {err}"})

    def _rater(self, name=None) -> str | None:
        """The rater this request acts as (mlops.labelling.access.Access.rater)."""
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return self.server.access.rater(token.strip() if scheme.lower() == "bearer" else "", name)

    def _unauthorized(self, err: Unauthorized) -> None:
        body = json.dumps({"error": str(err), "access": self.server.access.mode}).encode()
        self.send_response(HTTPStatus.UNAUTHORIZED)
        self.send_header("WWW-Authenticate", 'Bearer realm="drift label"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

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

"""`FakeGitHub` (tests/github/conftest.py) served over real HTTP on loopback.

Under act the traingate commands run in their own processes, so `responses` cannot reach them.
This server keeps FakeGitHub's routes, state and GitHub-like answers and puts them behind a
socket: PyGithub and the actions find it through `GITHUB_API_URL`, as on GitHub Enterprise.

FakeGitHub registers its routes with `add_callback(method, regex, callback)`; `_Routes` records
them instead of a `responses.RequestsMock`, and each HTTP request is matched against them in
registration order. Before every request the fake's branches are refreshed from the bare remote
(a job may just have pushed the pointer commit). A request no route serves answers 404 and is
kept in `unrouted`, so a test can see a call the fake does not model.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.github.conftest import FakeGitHub

Callback = Callable[[Any], tuple[int, dict[str, str], str]]


class _Routes:
    """Stands in for `responses.RequestsMock` while FakeGitHub registers its routes."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str] | str, Callback]] = []

    def add_callback(self, method: str, url: re.Pattern[str] | str, callback: Callback) -> None:
        self.routes.append((method, url, callback))

    def find(self, method: str, url: str) -> Callback | None:
        for m, pattern, callback in self.routes:
            if m != method:
                continue
            if isinstance(pattern, str) and pattern == url.split("?", 1)[0]:
                return callback
            if isinstance(pattern, re.Pattern) and pattern.match(url):
                return callback
        return None


@dataclass
class _Request:
    """What FakeGitHub's callbacks read from a `requests.PreparedRequest`."""

    method: str
    url: str
    body: bytes


class GitHubServer:
    """A ThreadingHTTPServer answering with FakeGitHub's routes; `.fake` holds the state."""

    def __init__(self, bare: Path, repo: str) -> None:
        self.bare = bare
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._routes = _Routes()
        self.fake = FakeGitHub(self._routes, repo=repo, api=self.url)  # type: ignore[arg-type]
        self.fake.git_dir = bare  # the compare API (a PR's diff) answers from the real branches
        self.unrouted: list[tuple[str, str]] = []
        self.tokens: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> GitHubServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _sync_branches(self) -> None:
        out = subprocess.run(
            ["git", "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads"],
            cwd=self.bare,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.fake.branches = dict(line.split(" ", 1) for line in out.splitlines())

    def handle(self, method: str, path: str, body: bytes, auth: str) -> tuple[int, dict[str, str], bytes]:
        url = self.url + path
        with self._lock:  # FakeGitHub's state is not thread-safe; GitHub serialises per PR anyway
            if auth:
                self.tokens.add(auth.split(" ", 1)[-1])
            self._sync_branches()
            callback = self._routes.find(method, url)
            if callback is None:
                self.unrouted.append((method, path))
                self.fake.log.append((method, path.split("?", 1)[0]))
                return 404, {"Content-Type": "application/json"}, b'{"message": "Not Found"}'
            try:
                status, headers, text = callback(_Request(method, url, body))
            except Exception:  # an injected dropped connection: close without answering
                return 0, {}, b""
        return status, headers, text.encode() if isinstance(text, str) else text

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = server.handle(
                    self.command, self.path, body, self.headers.get("Authorization", "")
                )
                if status == 0:
                    self.close_connection = True
                    return
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        return Handler


def summary(fake: FakeGitHub) -> dict[str, Any]:
    """The fake's state in one printable dict (assertion messages)."""
    return json.loads(
        json.dumps(
            {
                "pulls": fake.pulls,
                "labels": fake.labels,
                "statuses": fake.statuses,
                "comments": fake.comments,
                "graphql": fake.graphql,
                "merges": fake.merges,
                "log": fake.log,
            },
            default=str,
        )
    )

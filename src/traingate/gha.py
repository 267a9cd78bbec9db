"""GitHub Actions I/O: outputs, step summary, annotations, masks and log groups.

Outside Actions, annotations become plain `error:`/`warning:` lines on stderr and masks are
no-ops; outputs and the summary are written whenever `$GITHUB_OUTPUT` / `$GITHUB_STEP_SUMMARY`
are set (tests and `traingate run` set them to files to read back what a workflow would see).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ActionsContext:
    """Where this command runs, read once from the environment by `cli.py` and passed down.

    Stages take the fields they need from this object instead of reading `GITHUB_*` themselves,
    so a test states the context it means (`ActionsContext(event="push", ref_name="data/x")`)
    and no module guesses from an environment a test forgot to clear. Every field is "" (or
    False) outside Actions. The token is not here: it is a credential, read where it is used
    and masked there.
    """

    in_actions: bool = False
    event: str = ""
    # refs/heads/main; ref_name is its short form (the branch or tag); head_ref/base_ref are set
    # on pull_request events only.
    ref: str = ""
    ref_name: str = ""
    head_ref: str = ""
    base_ref: str = ""
    sha: str = ""
    repository: str = ""
    run_id: str = ""
    run_attempt: str = ""
    server_url: str = "https://github.com"
    api_url: str = "https://api.github.com"
    actor: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ActionsContext:
        src = os.environ if env is None else env
        return cls(
            in_actions=src.get("GITHUB_ACTIONS") == "true",
            event=src.get("GITHUB_EVENT_NAME", ""),
            ref=src.get("GITHUB_REF", ""),
            ref_name=src.get("GITHUB_REF_NAME", ""),
            head_ref=src.get("GITHUB_HEAD_REF", ""),
            base_ref=src.get("GITHUB_BASE_REF", ""),
            sha=src.get("GITHUB_SHA", ""),
            repository=src.get("GITHUB_REPOSITORY", ""),
            run_id=src.get("GITHUB_RUN_ID", ""),
            run_attempt=src.get("GITHUB_RUN_ATTEMPT", ""),
            server_url=(src.get("GITHUB_SERVER_URL") or cls.server_url).rstrip("/"),
            api_url=(src.get("GITHUB_API_URL") or cls.api_url).rstrip("/"),
            actor=src.get("GITHUB_ACTOR", ""),
        )

    @classmethod
    def given(cls, actions: ActionsContext | None) -> ActionsContext:
        """The context a caller passed; None means "not in Actions". A stage never reads
        GITHUB_* itself: only the CLI (`from_env`, once) does (#13)."""
        return actions if actions is not None else cls()

    @property
    def branch(self) -> str:
        """The branch this run is about: a PR's head, else the pushed/dispatched ref's name."""
        return self.head_ref or self.ref_name

    def run_url(self) -> str:
        """Link to this workflow run, to the attempt when it is a re-run ("" outside Actions)."""
        if not (self.repository and self.run_id):
            return ""
        attempt = f"/attempts/{self.run_attempt}" if self.run_attempt not in ("", "1") else ""
        return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}{attempt}"


def in_actions(env: Mapping[str, str] | None = None) -> bool:
    """Running as a GitHub Actions step (`env`: the environment to ask; default os.environ)."""
    return (os.environ if env is None else env).get("GITHUB_ACTIONS") == "true"


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def format_value(value: Any) -> str:
    """Outputs are strings in Actions; booleans are lower-case so `== 'true'` works in `if:`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def write_outputs(outputs: Mapping[str, Any], path: str | None = None) -> None:
    """Append outputs with a random heredoc delimiter per value, so any value (multi-line, or
    one that contains a fixed delimiter such as EOF) cannot inject another output."""
    target = path or os.environ.get("GITHUB_OUTPUT")
    if not target or not outputs:
        return
    chunks = []
    for name, value in outputs.items():
        text = format_value(value)
        delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        while delimiter in text:  # pragma: no cover - 128 random bits
            delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        chunks.append(f"{name}<<{delimiter}\n{text}\n{delimiter}\n")
    with Path(target).open("a", encoding="utf-8") as fh:
        fh.write("".join(chunks))


def read_outputs(path: str | Path) -> dict[str, str]:
    """Parse a $GITHUB_OUTPUT file the way the runner does (used by tests and `traingate run`)."""
    result: dict[str, str] = {}
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line:
            name, delimiter = line.split("<<", 1)
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            result[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            result[name] = value
        i += 1
    return result


def append_summary(markdown: str, path: str | None = None) -> None:
    target = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not target or not markdown:
        return
    with Path(target).open("a", encoding="utf-8") as fh:
        fh.write(markdown.rstrip("\n") + "\n\n")


def _annotate(
    kind: str,
    message: str,
    *,
    file: str | None = None,
    line: int | None = None,
    title: str | None = None,
) -> None:
    if in_actions():
        props = []
        if file:
            props.append(f"file={_escape_property(file)}")
        if line:
            props.append(f"line={line}")
        if title:
            props.append(f"title={_escape_property(title)}")
        prop_text = (" " + ",".join(props)) if props else ""
        # Workflow commands are read from stdout by the runner.
        print(f"::{kind}{prop_text}::{_escape_data(message)}", flush=True)
        return
    where = f" ({file}{':' + str(line) if line else ''})" if file else ""
    print(f"{kind}{where}: {message}", file=sys.stderr, flush=True)


def error(
    message: str, *, file: str | None = None, line: int | None = None, title: str | None = None
) -> None:
    _annotate("error", message, file=file, line=line, title=title)


def warning(
    message: str, *, file: str | None = None, line: int | None = None, title: str | None = None
) -> None:
    _annotate("warning", message, file=file, line=line, title=title)


def notice(message: str, *, file: str | None = None, title: str | None = None) -> None:
    _annotate("notice", message, file=file, title=title)


def mask(value: str | None) -> None:
    """Register a secret with the runner before anything could print it."""
    if not value or not in_actions():
        return
    for part in value.splitlines():
        if part.strip():
            print(f"::add-mask::{_escape_data(part)}", flush=True)


@contextlib.contextmanager
def group(title: str) -> Iterator[None]:
    """A collapsible log group in Actions; a plain heading elsewhere."""
    if in_actions():
        print(f"::group::{_escape_data(title)}", flush=True)
        try:
            yield
        finally:
            print("::endgroup::", flush=True)
    else:
        print(f"== {title}", file=sys.stderr, flush=True)
        yield

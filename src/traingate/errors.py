"""The one exception family every stage raises.

Failures raise; nothing reports failure by returning False or None (field report 1: an executor
logged "Successfully executed" after a handler returned False). Only `cli.py` turns these into
exit codes and `::error::` annotations, so each error carries what a person needs to act on it:
what failed, the value, and the next step (`hint`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class TraingateError(Exception):
    """Base class. `exit_code` follows DESIGN.md: 1 the step failed, 2 usage/configuration."""

    exit_code: int = 1
    title: str = "traingate failed"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        file: str | None = None,
        line: int | None = None,
        summary: str | None = None,
        outputs: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        warnings: Iterable[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.file = file
        self.line = line
        # Markdown for $GITHUB_STEP_SUMMARY: the long explanation (what to fix), while the
        # `::error::` annotation stays one short line.
        self.summary = summary
        # Outputs that are still true after a failure (e.g. validation_passed=false, the report
        # path). Never success flags: cli.py refuses to write `true` values from an error.
        self.outputs = outputs or {}
        # Structured detail for `--json` (e.g. the whole validation report with every error), so
        # a failed step prints what a successful one would, not only its first error.
        self.data = data or {}
        # Warnings the step gathered before it failed (a best-effort upload that did not happen,
        # a comment that could not be posted): cli.py annotates them with the error, so a
        # failure never swallows what was already known. Core code never annotates by itself.
        self.warnings: list[str] = list(warnings or ())
        # "while ..." lines added on the way up (`add_context`), outermost last: the error
        # says what failed, the context says what the step was doing when it did.
        self.context: list[str] = []

    def add_context(self, text: str) -> TraingateError:
        """Record what the caller was doing (`while merging data/new`); returns self for `raise`."""
        if text and text not in self.context:
            self.context.append(text)
        return self

    def add_warnings(self, warnings: Iterable[str]) -> TraingateError:
        """Carry warnings gathered before the failure (deduplicated, in order); returns self."""
        for text in warnings:
            if text and text not in self.warnings:
                self.warnings.append(text)
        return self

    def __str__(self) -> str:
        text = self.message + "".join(f"\n  while {c}" for c in self.context)
        if self.hint:
            return f"{text}\n  next step: {self.hint}"
        return text


class UsageError(TraingateError):
    exit_code = 2
    title = "usage error"


class ConfigError(TraingateError):
    exit_code = 2
    title = "configuration error"


class CredentialsError(TraingateError):
    """A token or credential the step needs is missing (exit 2: it is configuration)."""

    exit_code = 2
    title = "missing credentials"


class DataError(TraingateError):
    title = "data error"


class StoreError(TraingateError):
    title = "dataset store error"


class InfraError(TraingateError):
    title = "infrastructure error"


class TrainError(TraingateError):
    title = "training failed"


class TrackingError(TraingateError):
    title = "tracking server error"


class GateError(TraingateError):
    title = "quality gate could not decide"


class GitError(TraingateError):
    title = "git error"


class GitHubError(TraingateError):
    title = "GitHub error"


class UntrustedChangeError(TraingateError):
    """A data branch changes something a data push may not change (code, traingate.yml, ...)."""

    title = "untrusted change"
    code = "untrusted_change"

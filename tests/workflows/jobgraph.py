"""Decide which jobs of a workflow run, from their `needs:` and `if:`, the way the runner does.

Used by the job-graph scenarios in this folder and by the end-to-end harness, which executes
the stage behind each job itself and asks this module what runs next:

    run = WorkflowRun.from_file(".github/workflows/training-pipeline.yml", inputs={"merge": True})
    while (job := run.next_job()) is not None:
        result, outputs = execute(job)          # "success" | "failure" | "cancelled"
        run.finish(job, result, outputs)
    run.results                                  # {"train": "success", "create-pr": "skipped", ...}

Rules implemented (GitHub's documented behaviour):
- a job starts when every job in its `needs` has finished (any result);
- `if:` is evaluated with `needs.<id>.result` / `needs.<id>.outputs.<name>` of its direct needs,
  plus `inputs`, `vars`, `github`, `env` given by the caller;
- without a status function, `if:` means `success() && (...)`, and no `if:` means `success()`;
- for a job, `success()` is true when every job it depends on, directly or transitively,
  succeeded; `failure()` when any of them failed; `cancelled()` when the run was cancelled;
- a job whose condition is false is `skipped`, which its dependents then see.
- Default inputs come from the workflow's `on.workflow_call.inputs` (or `workflow_dispatch`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.workflows.expr import Context, evaluate_if

RESULTS = ("success", "failure", "cancelled", "skipped")


def load_workflow(path: str | Path) -> dict[str, Any]:
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    # PyYAML reads the `on:` key as the boolean True (YAML 1.1).
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def default_inputs(doc: Mapping[str, Any]) -> dict[str, Any]:
    on = doc.get("on") or {}
    if not isinstance(on, dict):
        return {}
    spec: dict[str, Any] = {}
    for trigger in ("workflow_call", "workflow_dispatch"):
        spec.update(((on.get(trigger) or {}).get("inputs")) or {})
    return {name: (item or {}).get("default") for name, item in spec.items()}


def _needs(job: Mapping[str, Any]) -> list[str]:
    needs = job.get("needs") or []
    return [needs] if isinstance(needs, str) else list(needs)


@dataclass
class WorkflowRun:
    jobs: dict[str, dict[str, Any]]
    inputs: dict[str, Any] = field(default_factory=dict)
    contexts: dict[str, Any] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancelled: bool = False
    order: list[str] = field(default_factory=list)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        inputs: Mapping[str, Any] | None = None,
        contexts: Mapping[str, Any] | None = None,
    ) -> WorkflowRun:
        return cls.from_doc(load_workflow(path), inputs, contexts)

    @classmethod
    def from_doc(
        cls,
        doc: Mapping[str, Any],
        inputs: Mapping[str, Any] | None = None,
        contexts: Mapping[str, Any] | None = None,
    ) -> WorkflowRun:
        jobs = dict(doc.get("jobs") or {})
        for name, job in jobs.items():
            for need in _needs(job):
                if need not in jobs:
                    raise ValueError(f"job {name!r} needs unknown job {need!r}")
        merged = {**default_inputs(doc), **(inputs or {})}
        run = cls(jobs=jobs, inputs=merged, contexts=dict(contexts or {}))
        run._check_acyclic()
        return run

    def _check_acyclic(self) -> None:
        state: dict[str, int] = {}

        def visit(name: str, trail: tuple[str, ...]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise ValueError(f"needs cycle: {' -> '.join((*trail, name))}")
            state[name] = 1
            for need in _needs(self.jobs[name]):
                visit(need, (*trail, name))
            state[name] = 2

        for name in self.jobs:
            visit(name, ())

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(_needs(self.jobs[name]))
        while stack:
            job = stack.pop()
            if job not in seen:
                seen.add(job)
                stack.extend(_needs(self.jobs[job]))
        return seen

    def _status(self, name: str) -> Callable[[str], bool]:
        upstream = [self.results[a] for a in self.ancestors(name)]

        def status(fn: str) -> bool:
            if fn == "always":
                return True
            if fn == "cancelled":
                return self.cancelled
            if fn == "failure":
                return any(r == "failure" for r in upstream)
            return not self.cancelled and all(r == "success" for r in upstream)

        return status

    def context_for(self, name: str) -> Context:
        needs = {
            need: {"result": self.results[need], "outputs": dict(self.outputs.get(need, {}))}
            for need in _needs(self.jobs[name])
        }
        values = {"github": {}, "vars": {}, "env": {}, "secrets": {}, **self.contexts}
        values.update({"needs": needs, "inputs": self.inputs})
        return Context(values=values, status=self._status(name))

    def next_job(self) -> str | None:
        """The next job to execute, deciding (and recording) skips on the way; None when done."""
        progress = True
        while progress:
            progress = False
            for name, job in self.jobs.items():
                if name in self.results:
                    continue
                if not all(n in self.results for n in _needs(job)):
                    continue
                if evaluate_if(job.get("if"), self.context_for(name)):
                    return name
                self.results[name] = "skipped"
                self.order.append(name)
                progress = True
        return None

    def finish(self, name: str, result: str, outputs: Mapping[str, Any] | None = None) -> None:
        if result not in RESULTS:
            raise ValueError(f"unknown result {result!r}; use one of {RESULTS}")
        if name in self.results:
            raise ValueError(f"job {name!r} already finished")
        self.results[name] = result
        self.outputs[name] = dict(outputs or {})
        self.order.append(name)

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def ran(self) -> list[str]:
        return [n for n in self.order if self.results[n] != "skipped"]


def simulate(
    path: str | Path,
    outcomes: Mapping[str, str | tuple[str, Mapping[str, Any]]],
    inputs: Mapping[str, Any] | None = None,
    contexts: Mapping[str, Any] | None = None,
    cancel_after: str | None = None,
) -> WorkflowRun:
    """Run the graph with a fixed outcome per job (default: success with no outputs)."""
    run = WorkflowRun.from_file(path, inputs, contexts)
    while (job := run.next_job()) is not None:
        outcome = outcomes.get(job, "success")
        result, outs = (outcome, {}) if isinstance(outcome, str) else outcome
        run.finish(job, result, outs)
        if cancel_after == job:
            run.cancel()
    return run


__all__ = ["WorkflowRun", "default_inputs", "load_workflow", "simulate"]

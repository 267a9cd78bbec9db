"""The `$GITHUB_OUTPUT` names each command writes: one list that the composite actions, the
reusable workflows and the docs are tested against.

A composite action that declares an output the code never writes gives callers an empty string
that reads as "false"; an output written but not declared is invisible to the caller
(configure-aws-credentials shipped exactly that). `tests/workflows/test_consistency.py` checks
this table against DEVELOPERS.md, every `action.yml` and every reusable workflow, so a stage that
adds an output adds it here first.
"""

from __future__ import annotations

# command (as typed after `traingate`) -> outputs written on success, in the order documented.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "data validate": ("validation_passed", "images", "pairs", "valid_pairs", "report"),
    "data merge": (
        "validation_passed",
        "total_images",
        "new_images",
        "existing_images",
        "report",
        "data_version",
        "commit_sha",
    ),
    "infra start": (
        "instance_id",
        "public_ip",
        "private_ip",
        "state",
        "mlflow_url",
        "holder",
        "market",
        "hourly_usd",
    ),
    "infra stop": ("instance_id", "state", "stopped", "remaining_holders"),
    "infra status": ("state", "holders"),
    "infra reap": ("reaped",),
    "train": ("run_id", "experiment_id", "metrics", "report", "data_version", "skipped"),
    "gate": ("improved", "baseline", "model_version", "run_id", "metrics", "report"),
    "promote": ("model_version", "alias", "promoted", "pending"),
    "pr create": ("pr_number", "pr_url", "operation", "head_sha", "body_path"),
    "pr automerge": ("pr_number", "merge_state", "method"),
    "pr comment": ("comment_url", "operation"),
    "run": ("improved", "run_id", "pr_url"),
    "demo": ("improved", "run_id", "pr_url"),
    "init": ("written",),
    "doctor": ("ok",),
}


BOOLEAN: tuple[str, ...] = ("true", "false")

# Outputs with a fixed vocabulary: command -> output -> every value it can write (as written to
# $GITHUB_OUTPUT). Callers compare them in `if:` conditions, where a value nobody declared is a
# condition that silently never holds; `tests/workflows/test_output_values.py` holds every
# action, reusable workflow and doc table to this list and runs the paths that write each value.
VALUES: dict[str, dict[str, tuple[str, ...]]] = {
    "data validate": {"validation_passed": BOOLEAN},
    "data merge": {"validation_passed": BOOLEAN},
    # on-demand after a spot-preferred fallback too; local: infra.backend local (no instance).
    "infra start": {"market": ("on-demand", "spot", "local")},
    "infra stop": {"stopped": BOOLEAN},
    # skipped: the dataset is the one @champion was trained on (train --skip-same-data).
    "train": {"skipped": BOOLEAN},
    "gate": {"improved": BOOLEAN},
    # rendered: no token/repository (or --render-only); skipped: head is the base branch.
    "pr create": {"operation": ("created", "updated", "rendered", "skipped")},
    "pr automerge": {
        # auto_merge_enabled: GitHub merges when the checks pass; merged: it was clean, merged now;
        # already_merged: merged before this step ran; off: pr.auto_merge is off.
        "merge_state": ("auto_merge_enabled", "merged", "already_merged", "off"),
        "method": ("squash", "merge", "rebase", "off"),
    },
    "pr comment": {"operation": ("created", "updated")},
    "run": {"improved": BOOLEAN},
    "demo": {"improved": BOOLEAN},
    "doctor": {"ok": BOOLEAN},
}


def values_of(command: str, output: str) -> tuple[str, ...] | None:
    """The declared values of an enumerated output (`train` writes the gate's), else None."""
    if command == "train" and output not in VALUES.get("train", {}):
        command = "gate"
    return VALUES.get(command, {}).get(output)


def check_values(command: str, written: dict[str, str]) -> list[str]:
    """What `command` wrote outside its declared vocabulary (empty when all is declared)."""
    problems = []
    for name, value in written.items():
        allowed = values_of(command, name)
        if allowed is not None and value not in allowed:
            problems.append(f"{command} wrote {name}={value!r}; declared: {', '.join(allowed)}")
    return problems


def outputs_of(command: str, *, gate: bool = False) -> tuple[str, ...]:
    """Outputs of `command`; `train --gate` also writes the gate's (without duplicates)."""
    names = list(OUTPUTS[command])
    if command == "train" and gate:
        names += [n for n in OUTPUTS["gate"] if n not in names]
    return tuple(names)


__all__ = ["BOOLEAN", "OUTPUTS", "VALUES", "check_values", "outputs_of", "values_of"]

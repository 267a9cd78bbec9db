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
    "train": ("run_id", "experiment_id", "metrics", "report", "data_version"),
    "gate": ("improved", "baseline", "model_version", "run_id", "metrics", "report"),
    "promote": ("model_version", "alias"),
    "pr create": ("pr_number", "pr_url", "operation", "head_sha", "body_path"),
    "pr automerge": ("pr_number", "merge_state", "method"),
    "pr comment": ("comment_url", "operation"),
    "run": ("improved", "run_id", "pr_url"),
    "demo": ("improved", "run_id", "pr_url"),
    "init": ("written",),
    "doctor": ("ok",),
}


def outputs_of(command: str, *, gate: bool = False) -> tuple[str, ...]:
    """Outputs of `command`; `train --gate` also writes the gate's (without duplicates)."""
    names = list(OUTPUTS[command])
    if command == "train" and gate:
        names += [n for n in OUTPUTS["gate"] if n not in names]
    return tuple(names)


__all__ = ["OUTPUTS", "outputs_of"]

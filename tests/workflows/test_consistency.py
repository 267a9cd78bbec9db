"""Actions, reusable workflows, templates and the CLI agree on names, outputs and wiring.

The failure this guards against is silent: an output declared but never written reads as an
empty string (which an `if:` treats as "not improved"), an input that reaches no CLI option does
nothing, a `with:` key the called workflow does not declare is a startup error only on GitHub.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest

from tests.workflows.conftest import (
    COMMANDS,
    OWN,
    ROOT,
    STAGES,
    TEMPLATES,
    WORKFLOWS,
    action,
    load,
    shipped_yaml,
)
from traingate.cli import cli
from traingate.outputs import OUTPUTS, outputs_of

SETUP_INPUTS = {"working-directory", "python-version"}
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def _env_name(inp: str) -> str:
    return "TRAINGATE_" + inp.upper().replace("-", "_")


def _command(path: str) -> click.Command:
    cmd: click.Command = cli
    for part in path.split():
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[part]
    return cmd


def _envvars(cmd: click.Command) -> set[str]:
    names: set[str] = set()
    for group_param in [*cli.params, *cmd.params]:
        env = getattr(group_param, "envvar", None)
        if isinstance(env, str):
            names.add(env)
        elif env:
            names.update(env)
    return names


def _traingate_step(act: dict[str, Any]) -> dict[str, Any]:
    steps = act["runs"]["steps"]
    calls = [s for s in steps if "traingate" in str(s.get("run", "")) and s.get("id") == "traingate"]
    assert len(calls) == 1, "exactly one traingate call per action"
    assert steps[-1] is calls[0], "the traingate call is the last step"
    return calls[0]


# ------------------------------------------------------------------------- outputs contract
def _developers_table() -> dict[str, tuple[str, ...]]:
    text = (ROOT / "DEVELOPERS.md").read_text(encoding="utf-8")
    table: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`") or cells[0] == "command":
            continue
        commands = [re.sub(r"`", "", c).strip() for c in cells[0].split(" / ")]
        if len(commands) > 1 and " " in commands[0] and " " not in commands[1]:
            commands[1] = commands[0].split()[0] + " " + commands[1]  # `infra status` / `reap`
        outputs_cell = re.sub(r"\(\+[^)]*\)", "", cells[2])  # "(+ gate outputs with --gate)"
        parts = outputs_cell.split(" / ")
        for i, cmd in enumerate(commands):
            part = parts[i] if len(parts) == len(commands) else parts[0]
            table[cmd] = tuple(re.findall(r"`([a-z_]+)`", part))
    return table


def test_outputs_table_matches_developers_md() -> None:
    assert _developers_table() == OUTPUTS


def test_every_command_in_the_table_exists() -> None:
    for command in OUTPUTS:
        _command(command)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_action_declares_exactly_what_the_cli_writes(stage: str) -> None:
    act = action(stage)
    expected = outputs_of(COMMANDS[stage], gate=stage == "train")
    assert tuple(act["outputs"]) == expected
    for name, spec in act["outputs"].items():
        assert spec["value"] == f"${{{{ steps.traingate.outputs.{name} }}}}"
        assert spec.get("description")


def test_root_action_declares_every_output_of_every_command() -> None:
    declared = set(action(None)["outputs"])
    written = {name for names in OUTPUTS.values() for name in names}
    assert declared == written


# -------------------------------------------------------------------------- inputs -> CLI
@pytest.mark.parametrize("stage", STAGES)
def test_every_input_reaches_the_cli_as_a_traingate_env_var(stage: str) -> None:
    act = action(stage)
    step = _traingate_step(act)
    env = step.get("env") or {}
    consumed = _envvars(_command(COMMANDS[stage]))
    for name, spec in act["inputs"].items():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", name), f"{name}: inputs are kebab-case"
        desc = spec.get("description", "")
        assert "Default" in desc or "Required" in desc, f"{stage}/{name}: say the default"
        if name in SETUP_INPUTS:
            continue
        var = _env_name(name)
        assert env.get(var) == f"${{{{ inputs.{name} }}}}", f"{stage}/{name} not passed as {var}"
        assert var in consumed, f"{var} is read by no option of `traingate {COMMANDS[stage]}`"
    # ...and nothing else sneaks into the call's environment.
    assert set(env) == {_env_name(n) for n in act["inputs"] if n not in SETUP_INPUTS}
    assert step["run"].split('/bin/traingate" ', 1)[1].strip().strip("'") == COMMANDS[stage]


def test_root_action_passes_command_and_args_without_a_shell() -> None:
    step = _traingate_step(action(None))
    assert step["env"] == {
        "TRAINGATE_COMMAND": "${{ inputs.command }}",
        "TRAINGATE_ARGS": "${{ inputs.args }}",
        "TRAINGATE_CONFIG": "${{ inputs.config }}",
    }
    assert "shlex.split" in step["run"]


def test_setup_steps_are_identical_across_actions() -> None:
    def normalise(act: dict[str, Any]) -> str:
        steps = act["runs"]["steps"][:-1]
        text = repr(steps)
        text = re.sub(r"cache-suffix': '[a-z-]+'|TRAINGATE_EXTRAS': '[^']*'", "X", text)
        return text.replace("/../..", "")  # a stage action lives two folders below the root

    reference = normalise(action("train"))
    for stage in STAGES:
        assert normalise(action(stage)) == reference, stage
    assert normalise(action(None)) == reference


def test_action_env_value_round_trips_through_click(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the action sets is what the command receives: strict booleans, empty = default.
    seen: dict[str, Any] = {}

    @click.command()
    @click.pass_context
    def probe(ctx: click.Context, **_params: Any) -> None:
        seen.update(ctx.params)

    stop = _command("infra stop")
    probe.params = list(stop.params)
    monkeypatch.setenv("TRAINGATE_NO_WAIT", "true")
    monkeypatch.setenv("TRAINGATE_FORCE", "")
    monkeypatch.setenv("TRAINGATE_HOLDER", "run-1-1")
    probe.main([], standalone_mode=False)
    assert seen == {"holder": "run-1-1", "no_wait": True, "force": False}
    monkeypatch.setenv("TRAINGATE_FORCE", "ture")
    with pytest.raises(click.BadParameter):
        probe.main([], standalone_mode=False)


# ------------------------------------------------------------- reusable workflows <-> actions
def _own_action_step(job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    for step in job.get("steps", []):
        uses = step.get("uses", "")
        if uses.startswith(f"{OWN}/actions/"):
            return uses.split("/actions/", 1)[1].split("@", 1)[0], step
    raise AssertionError("no traingate action step")


@pytest.mark.parametrize("stage", STAGES)
def test_reusable_workflow_wires_its_action(stage: str) -> None:
    wf = load(WORKFLOWS / f"{stage}.yml")
    call = wf["on"]["workflow_call"]
    (job_id, job), *rest = wf["jobs"].items()
    assert not rest, "one job per stage workflow"
    used, step = _own_action_step(job)
    assert used == stage
    act = action(stage)
    # every `with:` key is an input of the action, every required input is given
    assert set(step["with"]) <= set(act["inputs"])
    for name, spec in act["inputs"].items():
        if spec.get("required"):
            assert name in step["with"], f"{stage}: required input {name} not passed"
    # outputs: workflow -> job -> step, same names as the action
    assert tuple(call["outputs"]) == tuple(act["outputs"])
    for name in act["outputs"]:
        assert call["outputs"][name]["value"] == f"${{{{ jobs.{job_id}.outputs.{name} }}}}"
        assert job["outputs"][name] == f"${{{{ steps.{step['id']}.outputs.{name} }}}}"
    # every input used in the workflow is declared
    text = (WORKFLOWS / f"{stage}.yml").read_text()
    for used_input in set(re.findall(r"inputs\.([a-z-]+)", text)):
        assert used_input in call["inputs"], f"{stage}.yml uses undeclared input {used_input}"
    for used_secret in set(re.findall(r"secrets\.([A-Z_]+)", text)):
        assert used_secret in (call.get("secrets") or {}), f"{stage}.yml: undeclared {used_secret}"


def _called(uses: str) -> Path | None:
    if uses.startswith("./.github/workflows/"):
        return ROOT / uses[2:]
    if uses.startswith(f"{OWN}/.github/workflows/"):
        return WORKFLOWS / uses.split("/")[-1].split("@")[0]
    return None


def _callers() -> list[tuple[Path, str, dict[str, Any]]]:
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")) + sorted(TEMPLATES.glob("*.yml")):
        for job_id, job in load(path)["jobs"].items():
            if _called(job.get("uses", "")):
                found.append((path, job_id, job))
    return found


@pytest.mark.parametrize(("path", "job_id", "job"), _callers(), ids=lambda v: getattr(v, "name", v))
def test_calls_to_reusable_workflows_match_their_interface(path: Path, job_id: str, job: dict) -> None:
    called_path = _called(job["uses"])
    assert called_path is not None and called_path.exists(), job["uses"]
    called = load(called_path)["on"]["workflow_call"]
    inputs = called.get("inputs") or {}
    assert set(job.get("with") or {}) <= set(inputs), f"{path.name}:{job_id} passes unknown inputs"
    for name, spec in inputs.items():
        if spec.get("required"):
            assert name in (job.get("with") or {}), f"{path.name}:{job_id} misses {name}"
    secrets = job.get("secrets") or {}
    assert secrets != "inherit", "never `secrets: inherit`"
    assert set(secrets) <= set(called.get("secrets") or {})
    # A called workflow can only narrow permissions: the caller grants at least what it needs.
    caller_perms = job.get("permissions") or {}
    for inner in load(called_path)["jobs"].values():
        for scope, level in (inner.get("permissions") or {}).items():
            assert caller_perms.get(scope) in (level, "write"), f"{path.name}:{job_id} lacks {scope}"


def test_pipeline_job_outputs_referenced_exist() -> None:
    wf = load(WORKFLOWS / "training-pipeline.yml")
    text = (WORKFLOWS / "training-pipeline.yml").read_text()
    for job_id, name in set(re.findall(r"needs\.([a-z-]+)\.outputs\.([a-z_]+)", text)):
        called = load(_called(wf["jobs"][job_id]["uses"]))  # type: ignore[arg-type]
        assert name in called["on"]["workflow_call"]["outputs"], f"{job_id} has no output {name}"


def test_template_permissions_cover_the_pipeline() -> None:
    pipeline = load(WORKFLOWS / "training-pipeline.yml")
    needed: dict[str, str] = {}
    for job in pipeline["jobs"].values():
        for scope, level in (job.get("permissions") or {}).items():
            needed[scope] = "write" if "write" in (level, needed.get(scope)) else level
    for name in ("training-data-pipeline.yml", "manual-train.yml"):
        perms = load(TEMPLATES / name)["jobs"]["pipeline"]["permissions"]
        for scope, level in needed.items():
            assert perms.get(scope) in (level, "write"), f"{name} lacks {scope}: {level}"


# -------------------------------------------------------------------------------- hardening
@pytest.mark.parametrize("path", shipped_yaml(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_expression_inside_run(path: Path) -> None:
    doc = load(path)
    steps = [s for job in (doc.get("jobs") or {}).values() for s in job.get("steps", [])]
    steps += (doc.get("runs") or {}).get("steps", [])
    for step in steps:
        assert "${{" not in str(step.get("run", "")), f"{path.name}: expression in run: {step}"


@pytest.mark.parametrize("path", shipped_yaml(), ids=lambda p: str(p.relative_to(ROOT)))
def test_uses_are_pinned(path: Path) -> None:
    for line in path.read_text().splitlines():
        m = re.match(r"\s*(?:-\s*)?uses:\s*(\S+)(.*)$", line)
        if not m or m.group(1).startswith(("./", "$/")):
            continue
        ref, rest = m.groups()
        if ref.startswith(f"{OWN}/") or ref.startswith(f"{OWN}@"):
            continue  # the release ref, checked in test_release_ref.py
        assert SHA_PIN.match(ref), f"{path.name}: {ref} is not pinned by commit SHA"
        assert re.search(r"#\s*v\d", rest), f"{path.name}: {ref} lacks a `# vX` comment"


@pytest.mark.parametrize(
    "path",
    sorted(WORKFLOWS.glob("*.yml")) + sorted(TEMPLATES.glob("*.yml")),
    ids=lambda p: p.name,
)
def test_workflow_hardening(path: Path) -> None:
    doc = load(path)
    assert doc.get("permissions") == {}, "start from `permissions: {}`"
    lines = path.read_text().splitlines()
    for job_id, job in doc["jobs"].items():
        if "steps" in job:
            assert "timeout-minutes" in job, f"{job_id} has no timeout-minutes"
        for step in job.get("steps", []):
            if "actions/checkout" in step.get("uses", ""):
                persist = (step.get("with") or {}).get("persist-credentials")
                assert persist is not None, f"{job_id}: say whether checkout keeps credentials"
        assert "permissions" in job, f"{job_id}: grant permissions per job"
    # every write grant carries a comment saying why
    for line in lines:
        if re.match(r"\s+[a-z-]+: write\b", line):
            assert "#" in line, f"{path.name}: `{line.strip()}` needs a comment saying why"
    assert "secrets: inherit" not in path.read_text()


def test_concurrency_is_keyed_on_the_instance() -> None:
    touching = [WORKFLOWS / "training-pipeline.yml", TEMPLATES / "promote-on-merge.yml"]
    for path in touching:
        group = load(path)["concurrency"]
        assert group["cancel-in-progress"] is False
        assert group["group"].startswith("traingate-")
        assert "github.ref" not in group["group"] and "head_ref" not in group["group"]
    # A stage workflow holding the caller's group would deadlock the pipeline.
    for stage in STAGES:
        assert "concurrency" not in load(WORKFLOWS / f"{stage}.yml")
    for name in ("training-data-pipeline.yml", "manual-train.yml"):
        assert "concurrency" not in load(TEMPLATES / name), f"{name}: the pipeline holds the group"


def _concurrency_groups() -> list[tuple[str, dict[str, Any]]]:
    """Every concurrency block we ship: workflow level and job level."""
    found = []
    for path in [*sorted(WORKFLOWS.glob("*.yml")), *sorted(TEMPLATES.glob("*.yml"))]:
        doc = load(path)
        blocks = [(path.name, doc.get("concurrency"))]
        blocks += [(f"{path.name}:{jid}", job.get("concurrency")) for jid, job in doc["jobs"].items()]
        found += [(where, block) for where, block in blocks if block is not None]
    return found


def test_every_concurrency_group_says_how_it_queues() -> None:
    # GitHub keeps ONE pending run per group and cancels the one before it unseen unless the
    # group sets `queue: max`: a third data push within one training would be dropped.
    groups = _concurrency_groups()
    assert {where for where, _ in groups} >= {
        "training-pipeline.yml",
        "promote-on-merge.yml",
        "reap-instances.yml:promotion",
    }
    for where, block in groups:
        assert isinstance(block, dict), f"{where}: use the mapping form so `queue:` can be set"
        if block.get("cancel-in-progress") is False:
            # Serialising work (the instance, promotion): every waiting run must run.
            assert block.get("queue") == "max", f"{where}: a serialising group needs `queue: max`"
        else:
            # CI of this repository: the newest push wins, so dropping older pending runs is
            # the intent; it is still written down rather than left to the default.
            assert block.get("cancel-in-progress") is True, where
            assert block.get("queue") == "single", f"{where}: say `queue: single` (newest wins)"


def test_oidc_first_static_keys_as_fallback() -> None:
    for stage in ("merge-and-validate", "start-infra", "train", "stop-infra"):
        job = next(iter(load(WORKFLOWS / f"{stage}.yml")["jobs"].values()))
        assert job["permissions"]["id-token"] == "write"
        aws = [s for s in job["steps"] if "configure-aws-credentials" in s.get("uses", "")]
        assert [s["if"] for s in aws] == [
            "inputs.role-to-assume != ''",
            "inputs.role-to-assume == '' && env.TRAINGATE_STATIC_KEYS == 'true'",
        ]
        assert "role-to-assume" in aws[0]["with"]


def test_reports_travel_as_artifacts() -> None:
    def uploads(stage: str) -> list[dict]:
        job = next(iter(load(WORKFLOWS / f"{stage}.yml")["jobs"].values()))
        return [s for s in job["steps"] if "upload-artifact" in s.get("uses", "")]

    (data,) = uploads("merge-and-validate")
    assert data["if"] == "always()" and "data-report.json" in data["with"]["path"]
    (train,) = uploads("train")
    for name in ("gate-report.json", "metrics.jsonl", "train-report.json"):
        assert name in train["with"]["path"]
    pr = next(iter(load(WORKFLOWS / "create-pr.yml")["jobs"].values()))
    assert sum("download-artifact" in s.get("uses", "") for s in pr["steps"]) == 2
    assert not any("configure-aws-credentials" in s.get("uses", "") for s in pr["steps"])
    assert "id-token" not in pr["permissions"]


def test_caller_template_is_short() -> None:
    lines = (TEMPLATES / "training-data-pipeline.yml").read_text().splitlines()
    assert len(lines) <= 60
    doc = (ROOT / "docs" / "workflows.md").read_text(encoding="utf-8")
    assert f"`workflows-templates/training-data-pipeline.yml`, {len(lines)} lines" in doc


def test_self_test_covers_every_action() -> None:
    wf = load(WORKFLOWS / "self-test.yml")
    uses = {s.get("uses") for job in wf["jobs"].values() for s in job.get("steps", [])}
    assert "./" in uses  # the root action: the checkout of this commit (actionlint rejects a bare `$/`)
    for stage in STAGES:
        assert f"$/actions/{stage}" in uses, stage
    expected_failures = [
        job_id
        for job_id, job in wf["jobs"].items()
        if any(s.get("continue-on-error") for s in job.get("steps", []))
    ]
    failing_steps = [
        s for job_id in expected_failures for s in wf["jobs"][job_id]["steps"] if s.get("continue-on-error")
    ]
    assert len(failing_steps) >= 4
    assert {s["uses"] for s in failing_steps} >= {"./", "$/actions/train", "$/actions/stop-infra"}
    for job_id in expected_failures:
        steps = wf["jobs"][job_id]["steps"]
        failing = [s for s in steps if s.get("continue-on-error")]
        for step in failing:
            # an assertion step checks the outcome, so a step that unexpectedly passes fails the job
            assert any(f"steps.{step['id']}.outcome" in str(s.get("env", "")) for s in steps), job_id


def test_docs_cover_every_input_output_secret_and_permission() -> None:
    doc = (ROOT / "docs" / "workflows.md").read_text(encoding="utf-8")
    for stage in (None, *STAGES):
        act = action(stage)
        for name in [*act["inputs"], *act["outputs"]]:
            assert f"`{name}`" in doc, f"docs/workflows.md does not mention {name} ({stage or 'root'})"
    for path in sorted(WORKFLOWS.glob("*.yml")):
        call = (load(path).get("on") or {}).get("workflow_call")
        if not call:
            continue
        assert f"`.github/workflows/{path.name}`" in doc
        for kind in ("inputs", "outputs", "secrets"):
            for name in call.get(kind) or {}:
                assert f"`{name}`" in doc, f"{path.name}: {kind[:-1]} {name} undocumented"
    for scope in ("id-token: write", "contents: write", "pull-requests: write", "statuses: write"):
        assert f"`{scope.split(':')[0]}" in doc
    for sha_line in re.findall(r"uses: ([\w-]+/[\w-]+)@([0-9a-f]{40}) # (v[\d.]+)", _all_text()):
        repo, sha, tag = sha_line
        assert f"| `{repo}` | {tag} | `{sha}` |" in doc, f"{repo}@{sha} ({tag}) missing from the pin table"


def _all_text() -> str:
    return "\n".join(p.read_text() for p in shipped_yaml())

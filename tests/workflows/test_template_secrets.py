"""The copy-in templates pass the documented static-key fallback, explicitly.

docs/workflows.md: with `role-to-assume` empty, the stage workflows use the `AWS_ACCESS_KEY_ID` /
`AWS_SECRET_ACCESS_KEY` secrets. A reusable workflow sees a secret only when its caller passes
it, so a template that does not pass them makes the fallback unreachable; the templates' own
AWS steps (reap, promote) had no fallback at all. Secrets are named one by one: never
`secrets: inherit`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflows.conftest import OWN, ROOT, TEMPLATES, load

STATIC = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
TEMPLATE_FILES = sorted(TEMPLATES.glob("*.yml"))


def _called(uses: str) -> Path | None:
    if not uses.startswith(f"{OWN}/.github/workflows/"):
        return None
    return ROOT / uses.split("@", 1)[0].removeprefix(f"{OWN}/")


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.name)
def test_calls_pass_every_declared_secret_by_name(path: Path) -> None:
    for job_id, job in load(path)["jobs"].items():
        called = _called(job.get("uses", ""))
        if called is None:
            continue
        declared = set(load(called)["on"]["workflow_call"].get("secrets") or {})
        passed = job.get("secrets") or {}
        assert passed != "inherit", f"{path.name}:{job_id}: never `secrets: inherit`"
        assert set(passed) == declared, f"{path.name}:{job_id}: {sorted(passed)} != {sorted(declared)}"
        for name in declared & set(STATIC):
            assert passed[name] == f"${{{{ secrets.{name} }}}}", f"{path.name}:{job_id}: {name}"


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.name)
def test_own_aws_steps_fall_back_to_static_keys(path: Path) -> None:
    """A template job with its own AWS step: OIDC when AWS_ROLE_ARN is set, else the keys."""
    for job_id, job in load(path)["jobs"].items():
        aws = [s for s in job.get("steps", []) if "configure-aws-credentials@" in s.get("uses", "")]
        if not aws:
            continue
        assert job["env"]["TRAINGATE_STATIC_KEYS"] == "${{ secrets.AWS_ACCESS_KEY_ID != '' }}", job_id
        assert [s.get("if") for s in aws] == [
            "vars.AWS_ROLE_ARN != ''",
            "vars.AWS_ROLE_ARN == '' && env.TRAINGATE_STATIC_KEYS == 'true'",
        ], f"{path.name}:{job_id}"
        assert aws[0]["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
        assert aws[1]["with"]["aws-access-key-id"] == "${{ secrets.AWS_ACCESS_KEY_ID }}"
        assert aws[1]["with"]["aws-secret-access-key"] == "${{ secrets.AWS_SECRET_ACCESS_KEY }}"
        assert "role-to-assume" not in aws[1]["with"]


def test_every_template_that_touches_aws_offers_the_fallback() -> None:
    """reap-instances.yml and promote-on-merge.yml had no fallback (issue #15)."""
    offering = set()
    for path in TEMPLATE_FILES:
        text = path.read_text()
        if "secrets.AWS_ACCESS_KEY_ID" in text and "secrets.AWS_SECRET_ACCESS_KEY" in text:
            offering.add(path.name)
    assert offering == {p.name for p in TEMPLATE_FILES}

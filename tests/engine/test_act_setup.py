"""The engine suite's own set-up, checked without running act (runs wherever the suite skips)."""

from __future__ import annotations

from pathlib import Path

from tests.engine.act import REPO, extras_sets, for_act, internal_refs, template_ref


def test_the_ref_is_read_from_the_template(tmp_path: Path) -> None:
    """`@main` today; a release tag after the templates are pinned: the mapping follows."""
    tagged = tmp_path / "caller.yml"
    tagged.write_text(
        "jobs:\n  pipeline:\n    uses: traingate/traingate/.github/workflows/training-pipeline.yml@v1\n"
    )
    assert template_ref(tagged) == "v1"
    action = tmp_path / "reap.yml"
    action.write_text("jobs:\n  reap:\n    steps:\n      - uses: traingate/traingate@v1.2.0 # pinned\n")
    assert template_ref(action) == "v1.2.0"
    shipped = REPO / "workflows-templates" / "training-data-pipeline.yml"
    assert template_ref(shipped) in internal_refs()  # our own workflows use the same ref


def test_every_extras_set_a_job_installs_is_warmed() -> None:
    found = extras_sets()
    for action in sorted((REPO / "actions").glob("*/action.yml")):
        text = action.read_text()
        line = next(x for x in text.splitlines() if "TRAINGATE_EXTRAS:" in x)
        assert line.split(":", 1)[1].strip() in found, action


def test_only_the_queue_key_is_dropped_for_act() -> None:
    """act 0.2.89's schema lacks concurrency.queue; everything else reaches act unchanged."""
    text = (REPO / ".github" / "workflows" / "training-pipeline.yml").read_text()
    adapted = for_act(text)
    assert "\n  queue: max" in text and "\n  queue: max" not in adapted
    removed = [line for line in text.splitlines() if line not in adapted.splitlines()]
    assert [line.split(":")[0].strip() for line in removed] == ["queue"]

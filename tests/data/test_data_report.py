"""The data report: one typed shape (traingate.contracts.DataReport) for its writers and readers."""

from __future__ import annotations

import pytest

from traingate.contracts import DataIssue, DataReport, MergeCheck, MergeSummary, Replacement
from traingate.errors import DataError
from traingate.report import _checks, render_data_markdown

MERGED = {
    "status": "pass",
    "counts": {"images": 2, "masks": 2, "pairs": 2, "valid_pairs": 2},
    "errors": [],
    "warnings": [{"code": "near_empty_mask", "path": "masks/b.png", "message": "masks/b.png: 0.0005"}],
    "statistics": {"resolution": "64x48", "resolutions": {"64x48": 2}, "foreground_median": 0.3},
    "merge": {
        "existing_images": 4,
        "new_images": 1,
        "total_images": 5,
        "already_stored": 1,
        "replaced": [{"path": "masks/a2.png", "replaces": "masks/a2.png", "old": "0" * 32, "new": "1" * 32}],
        "data_version": "abc.dir",
        "commit": "d" * 40,
        "checks": [{"name": "names", "passed": True, "detail": "0 conflict(s)"}],
        "store": "DVC remote 'storage' (/tmp/r)",
        "uploaded_objects": 2,
        "downloaded_objects": 0,
        "duration_seconds": 0.25,
    },
}


def test_to_json_is_exactly_what_was_read() -> None:
    report = DataReport.from_json(MERGED)
    assert report.to_json() == MERGED
    assert report.merge is not None and report.merge.replaced[0] == Replacement(
        "masks/a2.png", "masks/a2.png", "0" * 32, "1" * 32
    )
    assert report.warnings == (DataIssue("near_empty_mask", "masks/b.png", "masks/b.png: 0.0005"),)


def test_optional_merge_keys_stay_absent() -> None:
    """A rejected merge and a finished interrupted one write fewer keys; none is invented."""
    merge = MergeSummary(existing_images=3, total_images=3, checks=(MergeCheck("finished", True, ""),))
    assert set(merge.to_json()) == {
        "existing_images",
        "new_images",
        "total_images",
        "replaced",
        "data_version",
        "commit",
        "checks",
    }
    assert "merge" not in DataReport(status="fail").to_json()


def test_missing_keys_are_tolerated_wrong_types_are_not() -> None:
    assert DataReport.from_json({}).status == "unknown"
    assert DataReport.from_json({"merge": {"checks": ["pairs"]}}).merge.checks == (MergeCheck("pairs"),)
    with pytest.raises(DataError, match=r"merge\.new_images must be int, got str"):
        DataReport.from_json({"merge": {"new_images": "12"}})
    with pytest.raises(DataError, match=r"counts\.pairs must be int"):
        DataReport.from_json({"counts": {"pairs": True}})
    with pytest.raises(DataError, match="errors must be list"):
        DataReport.from_json({"errors": "x"})


def test_replaced_files_are_named_not_dumped() -> None:
    """The PR body listed each replacement as a Python dict repr (`{'path': ...}`)."""
    text = render_data_markdown(MERGED)
    line = next(ln for ln in text.splitlines() if ln.startswith("Replaced"))
    assert line == "Replaced (on_conflict: replace): `masks/a2.png`"
    sibling = dict(MERGED["merge"], replaced=[{"path": "images/a.png", "replaces": "images/a.jpg"}])
    text = render_data_markdown(dict(MERGED, merge=sibling))
    assert "Replaced (on_conflict: replace): `images/a.png` (replaces `images/a.jpg`)" in text


def test_readers_take_the_typed_report() -> None:
    typed = DataReport.from_json(MERGED)
    assert render_data_markdown(typed) == render_data_markdown(MERGED)
    assert _checks(typed.merge) == ["✅ names — 0 conflict(s)"]

"""Markdown rendering: tables that hold their values, curves GitHub can draw, a body that fits."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from tests.github.conftest import DATA_REPORT, GATE_REPORT
from traingate import report
from traingate.errors import ConfigError, GitHubError


def test_gate_table_has_candidate_champion_delta_verdict() -> None:
    gate = dict(GATE_REPORT)
    gate["metrics"] = [
        *GATE_REPORT["metrics"],
        {
            "name": "loss",
            "direction": "min",
            "candidate": 0.2,
            "baseline": 0.1,
            "delta": 0.1,
            "passed": False,
            "reason": "worse by 0.1",
        },
    ]
    text = report.render_gate_markdown(dict(gate, improved=False))
    assert "Quality gate: ⛔ not improved" in text
    assert "| dice | max | 0.9134 | 0.8871 | +0.0263 | ✅ better |" in text
    assert "| loss | min | 0.2 | 0.1 | +0.1 | ⛔ worse by 0.1 |" in text
    assert "`water-meters` version 3 (`@champion`)" in text


def test_first_model_has_no_champion_column_values() -> None:
    gate = dict(GATE_REPORT, baseline="none")
    gate["metrics"] = [dict(GATE_REPORT["metrics"][0], baseline=None, delta=None)]
    text = report.render_gate_markdown(gate)
    assert "no `@champion` yet" in text
    assert "| dice | max | 0.9134 | — | — | ✅ better |" in text


def test_data_markdown_counts_checks_and_capped_errors() -> None:
    data = dict(DATA_REPORT, status="fail")
    data["errors"] = [
        {"code": "missing_mask", "path": f"images/{i}.jpg", "message": "no mask"} for i in range(7)
    ]
    text = report.render_data_markdown(data, max_errors=3)
    assert (
        "| existing images | 36 |" in text
        and "| new images | 12 |" in text
        and "| total images | 48 |" in text
    )
    assert "| errors | 7 |" in text
    assert text.count("`missing_mask`") == 3
    assert "… and 4 more" in text
    data["merge"] = dict(data["merge"], data_version="md5:ABCdef")
    assert "Data version `md5:ABCdef`" in report.render_data_markdown(data)
    assert "Checks that ran: ✅ pairs · ✅ resolution · ✅ binary masks · ✅ duplicates" in text


def test_untrusted_names_cannot_break_tables_or_inject_markup() -> None:
    data = {
        "status": "fail",
        "counts": {},
        "errors": [
            {
                "code": "corrupt_file",
                "path": "images/a|b`x`.png",
                "message": "bad\nline <img src=x onerror=alert(1)> [l](javascript:1) @team",
            }
        ],
    }
    text = report.render_data_markdown(data)
    row = next(line for line in text.splitlines() if "corrupt_file" in line)
    assert row.count(" | ") == 2  # still three cells
    assert "`images/a\\|b'x'.png`" in row  # inside a code span: inert, pipe escaped for the table
    assert "<img" not in text and "&lt;img" in text
    assert "[l](javascript" not in text
    assert "@team" not in text  # no mention from a message
    assert "bad line" in text


def test_links_only_for_http_urls() -> None:
    assert report.safe_url("https://github.com/o/r/actions/runs/1") == "https://github.com/o/r/actions/runs/1"
    assert report.safe_url("javascript:alert(1)") == ""
    assert report.safe_url("http://x/a) [evil](http://y") == ""
    body = report.render_pr_body(
        data_report=None, gate_report=dict(GATE_REPORT, run_url="file:///etc/passwd")
    )
    assert "file://" not in body and "MLflow run `" + "c" * 32 + "`" in body


def test_learning_curves_are_mermaid_xychart_with_downsampling() -> None:
    rows = [{"step": i, "loss": 1 / (i + 1), "dice": i / 300, "epoch": i, "note": "x"} for i in range(300)]
    rows.insert(5, {"step": 1000, "dice": math.nan})
    text = report.render_learning_curves(rows, metrics=["dice"], max_points=20)
    blocks = re.findall(r"```mermaid\n(.*?)```", text, re.S)
    assert [re.search(r'title "(.*)"', b).group(1) for b in blocks] == ["dice", "loss"]  # gated first
    dice = blocks[0]
    assert dice.startswith("xychart-beta\n")
    xs = re.search(r"x-axis \"step\" \[(.*)\]", dice).group(1).split(", ")
    ys = re.search(r"line \[(.*)\]", dice).group(1).split(", ")
    assert len(xs) == len(ys) == 20
    assert xs[0] == "0" and xs[-1] == "299"  # first and last epoch kept
    assert "nan" not in dice.lower() and "1000" not in dice
    assert re.search(r'y-axis "dice" 0 --> 0\.99666', dice)
    assert "epoch" not in text and "note" not in text


def test_curves_cap_and_hostile_metric_names() -> None:
    rows = [{"step": 1, f'm"{i}\n': 0.5} for i in range(9)]
    text = report.render_learning_curves(rows, max_curves=6)
    assert text.count("```mermaid") == 6
    assert "Not charted (limit 6)" in text
    for title in re.findall(r'title "(.*)"', text):
        assert '"' not in title
    assert report.render_learning_curves([]) == ""


def test_constant_curve_gets_a_visible_range() -> None:
    text = report.render_learning_curves([{"step": 1, "dice": 0.9}, {"step": 2, "dice": 0.9}])
    assert 'y-axis "dice" 0.4 --> 1.4' in text


def test_title_template_values_and_errors() -> None:
    title = report.render_pr_title(
        "{project}: +{new_images} → {total_images}, dice {dice}, v{model_version}",
        DATA_REPORT,
        GATE_REPORT,
        "wm",
    )
    assert title == "wm: +12 → 48, dice 0.9134, v4"
    assert report.render_pr_title("{new_images} new", None, GATE_REPORT) == "? new"
    with pytest.raises(ConfigError, match=r"unknown placeholder \{bogus\}"):
        report.render_pr_title("{bogus}", DATA_REPORT, GATE_REPORT)
    with pytest.raises(ConfigError, match="not a valid template"):
        report.render_pr_title("{", DATA_REPORT, GATE_REPORT)
    assert len(report.render_pr_title("x" * 400, DATA_REPORT, GATE_REPORT)) == 256


def test_cap_body_cuts_at_a_line_closes_fences_and_says_so() -> None:
    body = "intro\n```mermaid\n" + "\n".join(f"line {i}" for i in range(5000)) + "\n```\n"
    capped = report.cap_body(body, limit=2000)
    assert len(capped) <= 2000
    assert capped.count("```") % 2 == 0
    assert capped.rstrip().endswith("full report is in the workflow run's artifacts.")
    assert report.cap_body("short", limit=2000) == "short"


def test_pr_body_drops_detail_in_order_and_keeps_the_metric_table() -> None:
    data = dict(DATA_REPORT)
    data["warnings"] = [{"code": "w", "path": f"p{i}" * 20, "message": "m" * 80} for i in range(150)]
    rows = [{"step": i, "dice": i / 100} for i in range(100)]
    full = report.render_pr_body(data_report=data, gate_report=GATE_REPORT, metrics_rows=rows, max_errors=500)
    assert len(full) > 20_000 and "more |" not in full
    small = report.render_pr_body(
        data_report=data, gate_report=GATE_REPORT, metrics_rows=rows, max_errors=500, limit=20_000
    )
    assert len(small) <= 20_000 and "… and 140 more" in small and "```mermaid" in small
    tiny = report.render_pr_body(
        data_report=data, gate_report=GATE_REPORT, metrics_rows=rows, max_errors=500, limit=3_000
    )
    assert len(tiny) <= 3_000 and "| dice | max | 0.9134" in tiny and "```mermaid" not in tiny


def test_load_metrics_log_skips_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "dice": 0.5}\n\nnot json\n[1, 2]\n{"step": 2, "dice": 0.6}\n')
    rows, skipped = report.load_metrics_log(path)
    assert [r["step"] for r in rows] == [1, 2] and skipped == 2
    assert report.load_metrics_log(tmp_path / "missing.jsonl") == ([], 0)


def test_load_json_report_errors(tmp_path: Path) -> None:
    bad = tmp_path / "gate.json"
    bad.write_text('{"improved": tr')
    with pytest.raises(GitHubError, match="is not valid JSON"):
        report.load_json_report(bad, "gate report")
    bad.write_text(json.dumps([1]))
    with pytest.raises(GitHubError, match="must hold a JSON object"):
        report.load_json_report(bad, "gate report")


def test_run_url() -> None:
    from traingate.gha import ActionsContext

    ctx = ActionsContext(repository="o/r", run_id="9", server_url="https://ghe.example.com")
    assert ctx.run_url() == "https://ghe.example.com/o/r/actions/runs/9"
    assert ActionsContext(repository="o/r", run_id="9", run_attempt="1").run_url().endswith("/runs/9")
    rerun = ActionsContext(repository="o/r", run_id="9", run_attempt="2")
    assert rerun.run_url().endswith("/runs/9/attempts/2")
    assert ActionsContext().run_url() == ""
    # From an environment (the CLI builds it once): a trailing slash on the server is dropped.
    env = {"GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "9", "GITHUB_SERVER_URL": "https://ghe.example.com/"}
    assert ActionsContext.from_env(env).run_url() == "https://ghe.example.com/o/r/actions/runs/9"


def test_validation_comment_has_marker_and_next_step() -> None:
    text = report.render_validation_comment(
        {"status": "fail", "errors": [{"code": "no_data", "path": "", "message": "x"}]}
    )
    assert text.startswith(report.VALIDATION_COMMENT_MARKER)
    assert "nothing was merged" in text


def test_curve_numbers_use_the_notation_mermaid_parses() -> None:
    """mermaid's xychart grammar rejects `1e-05` / `1.2e+09` (checked against mermaid 11):
    every number must be plain decimal."""
    rows = [
        {"step": i, "lr": 1e-5 * (i + 1), "big": 1.23456789e9 * i, "neg": -0.5 + i / 1000} for i in range(10)
    ]
    rows.append({"step": 1e7, "lr": 3e-5})
    text = report.render_learning_curves(rows)
    plain = re.compile(r"^-?\d+(\.\d+)?$")
    for block in re.findall(r"```mermaid\n(.*?)```", text, re.S):
        xs = re.search(r"x-axis \"step\" \[(.*)\]", block).group(1).split(", ")
        ys = re.search(r"line \[(.*)\]", block).group(1).split(", ")
        lo, hi = re.search(r'y-axis "[^"]*" (\S+) --> (\S+)', block).groups()
        for value in [*xs, *ys, lo, hi]:
            assert plain.match(value), (value, block)
    assert "line [0.00001, 0.00002," in text and "10000000]" in text


def test_merge_checks_with_boolean_passed_get_a_verdict_mark() -> None:
    from traingate.report import _checks

    marks = _checks(
        {
            "checks": [
                {"name": "names", "passed": True, "detail": "0 conflict(s)"},
                {"name": "duplicates", "passed": False, "detail": "2"},
            ]
        }
    )
    assert marks == ["✅ names — 0 conflict(s)", "❌ duplicates — 2"]

"""Markdown rendering of the data report, the gate report and the pull-request body.

Public names other stages use for their step summaries:

- `render_data_markdown(data_report, max_errors=50)`: counts, merge counts, checks, and the
  errors table capped with "and N more".
- `render_gate_markdown(gate_report)`: verdict and the metric table (candidate, champion, delta,
  verdict per metric).
- `render_learning_curves(rows)`: mermaid `xychart-beta` blocks from `metrics.jsonl` rows.
- `render_pr_body(...)` / `render_pr_title(...)`: what `traingate pr create` sends.

The curves are mermaid because GitHub renders it inline: no image hosting, nothing leaves the
repository. Every value that came from a user (file names, metric names, messages) is escaped,
because a file called `a|b.png` or `<img src=...>` must not break the table or inject markup.
The body is capped at GitHub's 65,536 characters, dropping detail in a fixed order and saying so.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from traingate.contracts import DataReport, GateReport, MergeSummary, Replacement
from traingate.errors import ConfigError, GitHubError

GITHUB_BODY_LIMIT = 65_536
GITHUB_TITLE_LIMIT = 256
# Lines of a learning curve: enough to see the shape, few enough that the body stays small.
MAX_CURVE_POINTS = 60
MAX_CURVES = 6
# Keys of a metrics.jsonl row that index the row rather than measure the model.
_INDEX_KEYS = {"step", "epoch", "timestamp", "time", "wall_time", "ts"}
VALIDATION_COMMENT_MARKER = "<!-- traingate:validation-report -->"
PR_BODY_MARKER = "<!-- traingate:pr-body -->"
# What `traingate promote --reconcile` promotes when the PR is merged: the version the gate
# registered for *this* PR, never "whatever @challenger is when someone looks".
_PROMOTION_MARKER_RE = re.compile(r"<!-- traingate: (\{[^\n]*?\}) -->")

__all__ = [
    "GITHUB_BODY_LIMIT",
    "PR_BODY_MARKER",
    "VALIDATION_COMMENT_MARKER",
    "cap_body",
    "code_span",
    "escape_cell",
    "format_number",
    "load_json_report",
    "load_metrics_log",
    "parse_promotion_marker",
    "render_data_markdown",
    "render_gate_markdown",
    "render_learning_curves",
    "render_pr_body",
    "render_pr_title",
    "render_promotion_marker",
    "render_validation_comment",
    "safe_url",
]


# ------------------------------------------------------------------------------ small helpers
def escape_cell(value: Any) -> str:
    """Make an untrusted value safe inside a markdown table cell."""
    text = "" if value is None else str(value)
    text = text.replace("\r", " ").replace("\n", " ")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # `|` splits cells; backticks and brackets would open code spans and links; `@` would
    # mention someone from a file name.
    text = text.replace("|", "\\|").replace("`", "'").replace("[", "\\[").replace("]", "\\]")
    return text.replace("@", "@\u200b")


def code_span(value: Any) -> str:
    """A code span: markup inside it is inert, so only what would end the span or the cell goes."""
    text = "" if value is None else str(value)
    text = text.replace("\r", " ").replace("\n", " ").replace("`", "'").replace("|", "\\|")
    return f"`{text}`" if text.strip() else ""


def format_number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.{digits}g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.3e}"
    return escape_cell(value)


def _signed(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return ("+" if value > 0 else "") + format_number(value)
    return format_number(value)


def safe_url(url: Any) -> str:
    """Only http(s) links go into markdown; anything else (javascript:, file:) is dropped."""
    text = str(url or "").strip()
    if re.match(r"^https?://[^\s<>()\"']+$", text):
        return text
    return ""


# ------------------------------------------------------------------------------ report files
def load_json_report(path: Path, what: str) -> dict[str, Any]:
    """Read a stage report; a missing or corrupt file says which stage writes it."""
    if not path.exists():
        raise GitHubError(
            f"{what} not found: {path}",
            hint=f"run the stage that writes it first, or pass --{what.replace(' ', '-')} PATH "
            "(in a workflow: download the artifact the earlier job uploaded)",
            file=str(path),
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GitHubError(
            f"{what} {path} is not valid JSON: {err}",
            hint="re-run the stage that writes it; the file may have been truncated",
            file=str(path),
        ) from None
    if not isinstance(data, dict):
        raise GitHubError(
            f"{what} {path} must hold a JSON object, got {type(data).__name__}",
            hint="re-run the stage that writes it",
            file=str(path),
        )
    return data


def load_metrics_log(path: Path | None) -> tuple[list[dict[str, Any]], int]:
    """Rows of metrics.jsonl and the number of lines skipped (blank lines are not counted).

    A bad line costs its point on the curve, not the pull request: the gate already decided on
    the final metrics, and the body says how many lines were skipped.
    """
    if path is None or not path.exists():
        return [], 0
    rows: list[dict[str, Any]] = []
    skipped = 0
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                skipped += 1
    return rows, skipped


# ------------------------------------------------------------------------------- data report
def _data_report(data_report: DataReport | Mapping[str, Any]) -> DataReport:
    return data_report if isinstance(data_report, DataReport) else DataReport.from_json(data_report)


def _checks(merge: MergeSummary | Mapping[str, Any] | None) -> list[str]:
    if merge is not None and not isinstance(merge, MergeSummary):
        merge = MergeSummary.from_json(merge)
    out = []
    for check in merge.checks if merge is not None else ():
        mark = "•" if check.passed is None else ("✅" if check.passed else "❌")
        text = f"{mark} {escape_cell(check.name)}"
        if check.detail:
            text += f" — {escape_cell(check.detail)}"
        out.append(text)
    return out


def _replacement(r: Replacement) -> str:
    shown = code_span(r.path)
    return shown if r.replaces in ("", r.path) else f"{shown} (replaces {code_span(r.replaces)})"


def _merge_lines(merge: MergeSummary) -> list[str]:
    """Data version and commit, what was replaced, the checks that ran."""
    lines: list[str] = []
    parts = []
    if merge.data_version:
        parts.append(f"data version {code_span(merge.data_version)}")
    if merge.commit:
        parts.append(f"commit {code_span(merge.commit)}")
    if parts:
        text = ", ".join(parts)
        lines += [text[:1].upper() + text[1:], ""]  # not .capitalize(): it lower-cases hashes
    replaced = merge.replaced
    if replaced:
        shown = ", ".join(_replacement(r) for r in replaced[:20])
        more = f" and {len(replaced) - 20} more" if len(replaced) > 20 else ""
        lines += [f"Replaced (on_conflict: replace): {shown}{more}", ""]
    checks = _checks(merge)
    if checks:
        lines += ["Checks that ran: " + " · ".join(checks), ""]
    return lines


def _issue_tables(report: DataReport, max_errors: int) -> list[str]:
    lines: list[str] = []
    for title, items in (("Errors", report.errors), ("Warnings", report.warnings)):
        if not items:
            continue
        lines += [f"**{title}**", "", "| code | file | message |", "|---|---|---|"]
        lines += [
            f"| {code_span(i.code)} | {code_span(i.path)} | {escape_cell(i.message)} |"
            for i in items[:max_errors]
        ]
        if len(items) > max_errors:
            lines.append(f"| | | … and {len(items) - max_errors} more |")
        lines.append("")
    return lines


def render_data_markdown(
    data_report: DataReport | Mapping[str, Any], *, max_errors: int = 50, heading: int = 3
) -> str:
    """Validation and merge summary: counts, checks that ran, and the errors table (capped).
    `data_report`: the typed report, or its JSON as read from the file."""
    report = _data_report(data_report)
    icon = {"pass": "✅", "fail": "❌"}.get(report.status, "•")
    lines = [f"{'#' * heading} {icon} Data: validation {escape_cell(report.status)}", ""]
    merge = report.merge
    lines += ["| | count |", "|---|---:|"]
    if merge is not None:
        for value, label in (
            (merge.existing_images, "existing images"),
            (merge.new_images, "new images"),
            (merge.total_images, "total images"),
        ):
            lines.append(f"| {label} | {format_number(value)} |")
    for key, label in (("pairs", "pairs checked"), ("valid_pairs", "valid pairs")):
        if key in report.counts:
            lines.append(f"| {label} | {format_number(report.counts[key])} |")
    lines += [f"| errors | {len(report.errors)} |", f"| warnings | {len(report.warnings)} |", ""]
    if merge is not None:
        lines += _merge_lines(merge)
    if report.statistics:
        stats = ", ".join(
            f"{escape_cell(k)} {format_number(v)}" for k, v in sorted(report.statistics.items())
        )
        lines += ["Statistics: " + stats, ""]
    lines += _issue_tables(report, max_errors)
    return "\n".join(lines).rstrip() + "\n"


def render_validation_comment(
    data_report: DataReport | Mapping[str, Any], *, max_errors: int = 50, run_url: str = ""
) -> str:
    """The commit comment posted when `data merge` fails: the errors table, and how to fix."""
    body = [VALIDATION_COMMENT_MARKER, "## traingate: this data push was not merged", ""]
    body.append(render_data_markdown(_data_report(data_report), max_errors=max_errors))
    body.append("Fix the files listed above and push again; nothing was merged into the dataset.")
    url = safe_url(run_url)
    if url:
        body.append(f"\n[Workflow run]({url})")
    return "\n".join(body).rstrip() + "\n"


# ------------------------------------------------------------------------------- gate report
def render_gate_markdown(gate_report: GateReport | Mapping[str, Any], *, heading: int = 3) -> str:
    """Verdict and the metric table: candidate, champion, delta, verdict per metric.

    Takes the typed report, or its JSON (read with `GateReport.from_json`)."""
    gate = GateReport.from_json(gate_report)
    h = "#" * heading
    verdict = "✅ improved" if gate.improved else "⛔ not improved"
    lines = [f"{h} Quality gate: {verdict}", ""]
    model, alias = escape_cell(gate.model), escape_cell(gate.alias)
    if gate.first_model:
        against = f"no `@{alias}` yet (first model of `{model}`)"
    else:
        against = f"`{model}` version {escape_cell(gate.baseline)} (`@{alias}`)"
    lines.append(f"Candidate compared with {against}; require: {escape_cell(gate.require)}.")
    if gate.reason:
        lines.append(f"Reason: {escape_cell(gate.reason)}")
    if gate.model_version:
        promoted = " (promoted)" if gate.promoted else ""
        lines.append(f"Candidate registered as version {escape_cell(gate.model_version)}{promoted}.")
    lines.append("")
    lines += [
        "| metric | direction | candidate | champion | delta | verdict |",
        "|---|---|---:|---:|---:|---|",
    ]
    for m in gate.metrics:
        mark = "✅ better" if m.passed else ("⛔ " + escape_cell(m.reason or "not better"))
        if m.passed and m.reason:
            mark = "✅ " + escape_cell(m.reason)
        lines.append(
            f"| {escape_cell(m.name)} | {escape_cell(m.direction)} "
            f"| {format_number(m.candidate)} | {format_number(m.baseline)} "
            f"| {_signed(m.delta)} | {mark} |"
        )
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------- learning curves
def _mermaid_label(text: Any) -> str:
    """Mermaid strings are double-quoted with no escape syntax: keep a safe character set."""
    return re.sub(r"[^A-Za-z0-9 _./:+()-]", "_", str(text))[:60]


def _mermaid_number(value: float) -> str:
    """Six significant digits in plain decimal notation: mermaid's xychart grammar reads
    `1e-05` or `1.2e+09` as words and rejects the chart (checked against mermaid 11)."""
    if value == 0 or not math.isfinite(value):
        return "0"
    decimals = 5 - math.floor(math.log10(abs(value)))
    text = f"{value:.{max(0, min(decimals, 15))}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _downsample(points: Sequence[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """Evenly spaced points that always keep the first and the last epoch."""
    if len(points) <= limit:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    picked = sorted({round(i * step) for i in range(limit)})
    return [points[i] for i in picked]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def render_learning_curves(
    rows: Iterable[Mapping[str, Any]],
    *,
    metrics: Sequence[str] | None = None,
    max_points: int = MAX_CURVE_POINTS,
    max_curves: int = MAX_CURVES,
) -> str:
    """One mermaid `xychart-beta` per metric (xychart has no legend, so one line per chart).

    `metrics` puts the gated metrics first; other numeric keys follow in first-seen order.
    Rows without `step` use their position; non-finite values are left out of that curve.
    """
    series: dict[str, list[tuple[float, float]]] = {}
    for index, row in enumerate(rows):
        step = row.get("step", row.get("epoch", index))
        if not _is_number(step):
            step = index
        for key, value in row.items():
            if key in _INDEX_KEYS or not _is_number(value):
                continue
            series.setdefault(str(key), []).append((float(step), float(value)))
    if not series:
        return ""
    order = [m for m in (metrics or []) if m in series]
    order += [k for k in series if k not in order]
    blocks = []
    for name in order[:max_curves]:
        points = sorted(series[name], key=lambda p: p[0])
        points = _downsample(points, max_points)
        xs = ", ".join(str(int(x)) if x.is_integer() else _mermaid_number(x) for x, _ in points)
        ys = ", ".join(_mermaid_number(y) for _, y in points)
        lo = min(y for _, y in points)
        hi = max(y for _, y in points)
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        label = _mermaid_label(name)
        blocks.append(
            "\n".join(
                [
                    "```mermaid",
                    "xychart-beta",
                    f'    title "{label}"',
                    f'    x-axis "step" [{xs}]',
                    f'    y-axis "{label}" {_mermaid_number(lo)} --> {_mermaid_number(hi)}',
                    f"    line [{ys}]",
                    "```",
                ]
            )
        )
    if len(order) > max_curves:
        rest = ", ".join(code_span(k) for k in order[max_curves:])
        blocks.append(f"Not charted (limit {max_curves}): {rest}")
    return "\n\n".join(blocks) + "\n"


# ----------------------------------------------------------------------------------- PR body
def render_pr_title(
    template: str,
    data_report: DataReport | Mapping[str, Any] | None,
    gate_report: GateReport | Mapping[str, Any],
    project: str = "",
) -> str:
    """Fill `pr.title`: {new_images}, {existing_images}, {total_images}, {model}, {model_version},
    {project}, and each gated metric's candidate value by name (e.g. {dice})."""
    merge = _data_report(data_report).merge if data_report else None
    gate = GateReport.from_json(gate_report)
    values: dict[str, Any] = dict(
        new_images=merge.new_images if merge else "?",
        existing_images=merge.existing_images if merge else "?",
        total_images=merge.total_images if merge else "?",
        model=gate.model,
        model_version=gate.model_version or "",
        project=project,
    )
    for m in gate.metrics:
        if m.name:
            values.setdefault(m.name, format_number(m.candidate))
    try:
        title = template.format_map(values)
    except KeyError as err:
        raise ConfigError(
            f"pr.title uses an unknown placeholder {{{err.args[0]}}}: {template!r}",
            hint="use {new_images}, {existing_images}, {total_images}, {model}, {model_version}, "
            "{project} or a gated metric name such as "
            + ", ".join(f"{{{m}}}" for m in values if m not in ("model",))[:120],
        ) from None
    except (ValueError, IndexError) as err:
        raise ConfigError(
            f"pr.title is not a valid template ({err}): {template!r}",
            hint="write placeholders as {name}; double braces {{ }} for literal braces",
        ) from None
    title = " ".join(title.split())
    if len(title) > GITHUB_TITLE_LIMIT:
        title = title[: GITHUB_TITLE_LIMIT - 1] + "…"
    return title


def cap_body(body: str, limit: int = GITHUB_BODY_LIMIT) -> str:
    """Cut at a line boundary and say so; GitHub rejects longer bodies with a 422."""
    if len(body) <= limit:
        return body
    note = (
        f"\n\n> ✂️ Truncated to GitHub's {limit:,}-character limit; the full report is in the "
        "workflow run's artifacts.\n"
    )
    cut = body[: limit - len(note)]
    newline = cut.rfind("\n")
    if newline > 0:
        cut = cut[:newline]
    # A cut inside a fenced block would swallow the note into the code block.
    if cut.count("```") % 2:
        cut += "\n```"
        if len(cut) + len(note) > limit:
            cut = cut[: limit - len(note) - 4]
            cut = cut[: cut.rfind("\n")] + "\n```"
    return cut + note


def render_promotion_marker(gate_report: GateReport | Mapping[str, Any]) -> str:
    """`<!-- traingate: {"model", "version", "run_id", "promote"} -->`, or "" without a version.

    JSON inside an HTML comment: `>` is written as `\\u003e` so no value can close the comment.
    """
    gate = GateReport.from_json(gate_report)
    if not gate.model_version or not gate.model:
        return ""
    data = {
        "model": gate.model,
        "version": gate.model_version,
        "run_id": gate.candidate_run_id,
        "promote": gate.promote_mode,
    }
    return "<!-- traingate: " + json.dumps(data, sort_keys=True).replace(">", "\\u003e") + " -->"


def parse_promotion_marker(body: str | None) -> dict[str, str] | None:
    """The marker `render_promotion_marker` wrote, or None when there is none (or it is not JSON)."""
    match = _PROMOTION_MARKER_RE.search(body or "")
    if match is None:
        return None
    try:
        data = json.loads(match.group(1))
    except ValueError:
        return None
    if not isinstance(data, dict) or not data.get("model") or not data.get("version"):
        return None
    return {k: str(data.get(k) or "") for k in ("model", "version", "run_id", "promote")}


def render_pr_body(
    *,
    data_report: DataReport | Mapping[str, Any] | None,
    gate_report: GateReport | Mapping[str, Any],
    metrics_rows: Sequence[Mapping[str, Any]] = (),
    skipped_metric_lines: int = 0,
    run_url: str = "",
    limit: int = GITHUB_BODY_LIMIT,
    max_errors: int = 50,
    status_context: str = "traingate/gate",
) -> str:
    """The PR body: what changed in the data, how the model compares, where to look further.

    When the body would exceed `limit`, the data tables shrink to 10 rows first, then the learning
    curves go, and only then is the text cut, so the metric table (what a reviewer merges on) stays.
    Takes the typed reports, or their JSON (read once with `from_json`).
    """
    gate = GateReport.from_json(gate_report)
    data = _data_report(data_report) if data_report else None

    def build(with_curves: bool, errors_cap: int) -> str:
        parts = [
            *_pr_head(gate, run_url),
            render_gate_markdown(gate),
            *_pr_data(data, errors_cap),
            *_pr_curves(gate, metrics_rows, with_curves),
        ]
        if skipped_metric_lines:
            parts.append(
                f"> {skipped_metric_lines} line(s) of metrics.jsonl were not JSON objects and were skipped.\n"
            )
        parts.append(
            "<sub>Opened by traingate because the quality gate passed. The `"
            + escape_cell(status_context)
            + "` commit status on this head carries the same verdict.</sub>"
        )
        return "\n".join(parts).rstrip() + "\n"

    body = build(True, max_errors)
    if len(body) > limit:
        body = build(True, min(max_errors, 10))
    if len(body) > limit:
        body = build(False, min(max_errors, 10))
    return cap_body(body, limit)


def _pr_head(gate: GateReport, run_url: str) -> list[str]:
    """The markers, the heading and the links to the MLflow and Actions runs."""
    # At the top: cap_body cuts the tail, never the marker promotion reads.
    marker = render_promotion_marker(gate)
    parts = [PR_BODY_MARKER, *([marker] if marker else []), "## traingate: the model improved", ""]
    links = []
    mlflow_url = safe_url(gate.run_url)
    if mlflow_url:
        links.append(f"[MLflow run]({mlflow_url})")
    elif gate.candidate_run_id:
        links.append(f"MLflow run {code_span(gate.candidate_run_id)}")
    actions_url = safe_url(run_url)
    if actions_url:
        links.append(f"[Actions run]({actions_url})")
    if links:
        parts += [" · ".join(links), ""]
    return parts


def _pr_data(data_report: DataReport | None, errors_cap: int) -> list[str]:
    if data_report is not None:
        return [render_data_markdown(data_report, max_errors=errors_cap)]
    return [
        "### Data",
        "",
        "No data report was given (`--data-report`); this run retrained on the stored dataset.",
        "",
    ]


def _pr_curves(gate: GateReport, metrics_rows: Sequence[Mapping[str, Any]], with_curves: bool) -> list[str]:
    """The gated metrics' learning curves, or a line saying they were left out for the limit."""
    gated = [m.name for m in gate.metrics]
    curves = render_learning_curves(metrics_rows, metrics=gated) if with_curves else ""
    if curves:
        return ["### Learning curves", "", curves]
    if metrics_rows and not with_curves:
        return ["### Learning curves", "", "Left out to stay within GitHub's body limit.", ""]
    return []

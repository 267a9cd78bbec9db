"""PR stage costs: body rendering time and size, and GitHub requests per command.

    .venv/bin/python bench/bench_github.py            # 2,000 epochs x 9 metrics, 5,000 warnings
    .venv/bin/python bench/bench_github.py --quick    # 100 epochs x 9 metrics (the field report's run)

Figures printed:
- rendering: `render_pr_body` from the parsed reports, as a ratio to the baseline measured in
  the same run (just `json.loads` of every metrics.jsonl line, the least any renderer must do);
- the body size against GitHub's 65,536-character limit, and which degradation step it took;
- HTTP requests per `pr create` (created / updated) and `pr automerge` (scheduled / clean),
  counted against the same `responses` fake of GitHub the tests use, with the real PyGithub.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))


def _timed(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_render(epochs: int, warnings: int, repeat: int) -> None:
    from tests.github.conftest import DATA_REPORT, GATE_REPORT

    from traingate import report

    names = ["dice", "iou", "loss", "val_dice", "val_iou", "val_loss", "precision", "recall", "lr"]
    lines = [
        json.dumps({"step": i, **{n: 1 / (i + 1) + k for k, n in enumerate(names)}}) for i in range(epochs)
    ]
    data = dict(DATA_REPORT)
    data["warnings"] = [
        {"code": "near_empty_mask", "path": f"masks/m{i:05d}.png", "message": "0.05% foreground"}
        for i in range(warnings)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metrics.jsonl"
        path.write_text("\n".join(lines) + "\n")
        baseline = _timed(lambda: [json.loads(x) for x in path.read_text().splitlines()], repeat)

        def render() -> str:
            rows, skipped = report.load_metrics_log(path)
            return report.render_pr_body(
                data_report=data, gate_report=GATE_REPORT, metrics_rows=rows, skipped_metric_lines=skipped
            )

        t = _timed(render, repeat)
        body = render()
    charts = body.count("```mermaid")
    print(f"render: {epochs} epochs x {len(names)} metrics, {warnings} warnings")
    print(f"  baseline json.loads of metrics.jsonl: {baseline * 1000:8.2f} ms")
    print(f"  render_pr_body (load + render):       {t * 1000:8.2f} ms  ratio {t / baseline:5.2f}x")
    print(
        f"  body: {len(body):,} chars of {report.GITHUB_BODY_LIMIT:,} "
        f"({len(body) / report.GITHUB_BODY_LIMIT:.0%}), {charts} charts, "
        f"warnings table capped: {'more |' in body}, "
        f"text cut: {'Truncated to' in body}"
    )


def bench_requests() -> None:
    """Requests are counts, not timings: printed as they are (each one costs 0.25-1 s of
    GitHub's recommended pacing and a share of GITHUB_TOKEN's 1,000 requests per hour)."""
    import responses
    from tests.github.conftest import DATA_REPORT, GATE_REPORT, FakeGitHub

    from traingate.config import parse_config
    from traingate.gha import ActionsContext
    from traingate.github.automerge import automerge_step
    from traingate.github.forge import PyGithubForge
    from traingate.pipeline.pr import create_step

    def factory(token: str, repo: str) -> PyGithubForge:
        return PyGithubForge(token, repo, seconds_between_requests=0, seconds_between_writes=0)

    counts: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config({"project": "bench"}, base_dir=Path(tmp))
        reports = cfg.workspace_dir / "reports"
        reports.mkdir(parents=True)
        (reports / "gate-report.json").write_text(json.dumps(GATE_REPORT))
        (reports / "data-report.json").write_text(json.dumps(DATA_REPORT))
        actions = ActionsContext(repository="o/r", ref_name="data/20240501-101500")
        create: dict[str, Any] = dict(
            token="t", repo=None, head=None, base=None, data_report=None, gate_report=None, metrics_log=None
        )
        auto: dict[str, Any] = dict(token="t", repo=None, pr_number=1, method=None, delete_branch=None)
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            fake = FakeGitHub(rsps)

            def run(name: str, fn: Any) -> None:
                before = len(fake.log)
                fn()
                counts[name] = [f"{m} {p.split('/o/r', 1)[-1] or p}" for m, p in fake.log[before:]]

            def create_pr() -> Any:
                return create_step(cfg, forge_factory=factory, actions=actions, **create)

            run("pr create (created)", create_pr)
            run("pr create (updated)", create_pr)
            run(
                "pr automerge (scheduled)",
                lambda: automerge_step(cfg, forge_factory=factory, actions=actions, **auto),
            )
            fake.pulls[1].update(mergeable_state="clean", auto_merge=None)
            run(
                "pr automerge (clean, merged)",
                lambda: automerge_step(
                    cfg, forge_factory=factory, actions=actions, **dict(auto, delete_branch=True)
                ),
            )
    print("GitHub requests per command (real PyGithub against the tests' fake):")
    for name, calls in counts.items():
        print(f"  {name:30s} {len(calls):2d}  {', '.join(calls)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, well under 60 s")
    args = parser.parse_args()
    if args.quick:
        bench_render(epochs=100, warnings=50, repeat=5)
    else:
        bench_render(epochs=2000, warnings=5000, repeat=5)
    bench_requests()


if __name__ == "__main__":
    main()

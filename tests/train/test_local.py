"""LocalExecutor: a real subprocess, streamed output, exit codes, timeouts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from traingate.contracts import TrainJob
from traingate.errors import TrainError, UsageError
from traingate.train.local import LocalExecutor, group_members


def job(tmp_path: Path, script: str, *, timeout: float = 30, setup: str = "") -> TrainJob:
    (tmp_path / "s.py").write_text(script)
    return TrainJob(
        command=f"{sys.executable} s.py --flag 'two words'",
        workdir=tmp_path,
        env={"TG_TEST": "from-env"},
        timeout_seconds=timeout,
        metrics_file="m.json",
        metrics_log="m.jsonl",
        setup=setup,
    )


def test_streams_output_and_passes_env_and_args(tmp_path: Path) -> None:
    lines: list[str] = []
    script = (
        "import os, sys\nprint(os.environ['TG_TEST'])\nprint(sys.argv[1:])\nprint('err', file=sys.stderr)\n"
    )
    outcome = LocalExecutor().run(job(tmp_path, script), lines.append)
    assert outcome.exit_code == 0 and not outcome.killed
    assert lines == ["from-env", "['--flag', 'two words']", "err"]
    assert outcome.outputs_dir == tmp_path


def test_exit_code_and_tail(tmp_path: Path) -> None:
    script = "for i in range(100):\n    print('line', i)\nraise SystemExit(7)\n"
    outcome = LocalExecutor().run(job(tmp_path, script), lambda _l: None)
    assert outcome.exit_code == 7
    assert outcome.log_tail.splitlines()[-1] == "line 99"
    assert len(outcome.log_tail.splitlines()) == 40


@pytest.mark.parametrize("stubborn", [False, True], ids=["polite", "ignores-sigterm"])
def test_timeout_kills_the_process_group(tmp_path: Path, stubborn: bool) -> None:
    ignore = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " if stubborn else ""
    script = (
        "import os, subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {ignore + 'import time; time.sleep(60)'!r}])\n"
        "open('pgid', 'w').write(str(os.getpgid(0)))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    outcome = LocalExecutor(kill_grace_seconds=1).run(job(tmp_path, script, timeout=1.5), lambda _l: None)
    assert outcome.killed
    # run() returns only when no process of the group is left: a worker that outlived its
    # parent (or ignores SIGTERM) would keep the GPU.
    assert group_members(int((tmp_path / "pgid").read_text())) == []


def test_failing_setup_stops_before_the_command(tmp_path: Path) -> None:
    (tmp_path / "setup.py").write_text("print('installing'); raise SystemExit(2)")
    script = "open('ran', 'w').write('x')\n"
    outcome = LocalExecutor().run(job(tmp_path, script, setup=f"{sys.executable} setup.py"), lambda _l: None)
    assert outcome.exit_code == 2
    assert "train.setup failed" in outcome.log_tail
    assert not (tmp_path / "ran").exists()


def test_missing_program_and_folder(tmp_path: Path) -> None:
    j = job(tmp_path, "")
    j.command = "no-such-program-xyz --x"
    with pytest.raises(TrainError, match="cannot run 'no-such-program-xyz': no such program"):
        LocalExecutor().run(j, lambda _l: None)
    j.workdir = tmp_path / "missing"
    with pytest.raises(TrainError, match="does not exist"):
        LocalExecutor().run(j, lambda _l: None)
    j.workdir = tmp_path
    j.command = "python 'unterminated"
    with pytest.raises(TrainError, match=r"cannot parse train\.command"):
        LocalExecutor().run(j, lambda _l: None)


def test_attach_is_for_instances(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--attach is for train\.where: instance"):
        LocalExecutor().attach("r1", job(tmp_path, ""), lambda _l: None)

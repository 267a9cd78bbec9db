"""The lease and the watchdog are renewed while any training runs, wherever it runs (#14).

Before: only instance-side training renewed them, so with `train.where: runner` (the `init`
default) a run longer than `infra.ttl_minutes` had the instance halted by its own watchdog, or its
lease reaped, under it. Runs much longer than the TTL are simulated on the fake clock: the keep-
alive thread is stepped one renewal period at a time while the clock advances.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.ssm_fake import FakeClock, FakeSsm
from tests.fixtures.tracking_project import *  # noqa: F403 - `project` (a real MLflow on sqlite)
from tests.infra.conftest import ScriptedEc2, make_cfg
from tests.tracking.helpers import Project
from traingate.infra.backend import backend_for
from traingate.infra.keepalive import KeepAlive
from traingate.infra.lease import FileLease
from traingate.infra.stage import reap_step, start_step

LOG: list[str] = []


class Stepper:
    """Runs the keep-alive thread one wait at a time, in lockstep with the test."""

    def __init__(self) -> None:
        self._go = threading.Semaphore(0)
        self._idle = threading.Semaphore(0)
        self._stopped = False

    def wait(self, seconds: float) -> bool:  # called by the keep-alive thread
        self._idle.release()
        self._go.acquire()
        return self._stopped

    def step(self) -> None:
        assert self._idle.acquire(timeout=30), "keep-alive thread not waiting"
        self._go.release()

    def stop(self) -> None:
        assert self._idle.acquire(timeout=30)
        self._stopped = True
        self._go.release()


def _long_training(
    keep: KeepAlive | None, stepper: Stepper, clock: FakeClock, ssm: FakeSsm | None, iid: str, hours: float
) -> None:
    """`hours` of training on the runner, in 20-minute steps of the fake clock."""
    for _ in range(int(hours * 3)):
        clock.advance(20 * 60)
        if ssm is not None:
            ssm.tick(iid)  # the instance's clock: the watchdog fires when it is due
        if keep is not None:
            stepper.step()


def test_runner_side_training_longer_than_the_ttl_keeps_the_shared_instance(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    cfg = make_cfg(tmp_path, instance_id)  # ttl_minutes 60
    svc = services(cfg)
    start_step(cfg, "run-a", runtime=clock.runtime(LOG.append), services=svc)
    backend = backend_for(cfg, services=svc, runtime=clock.runtime(LOG.append))
    stepper = Stepper()
    keep = KeepAlive(cfg, "run-a", backend=backend, runtime=clock.runtime(LOG.append), wait=stepper.wait)
    with keep:
        _long_training(keep, stepper, clock, ssm, instance_id, hours=3)  # 3x the TTL
        # Mid-training, another run's reaper sees a live lease and leaves the instance alone.
        reaped = reap_step(cfg, runtime=clock.runtime(LOG.append), services=svc)
        assert reaped.outputs["reaped"] == []
        stepper.stop()
    assert ec2.inner.describe(instance_id).state == "running"
    assert instance_id not in ssm.watchdog_fired
    assert ssm.shutdown_at(instance_id) == pytest.approx(clock() + 60 * 60, abs=60)
    assert keep.renewals == 1 + 9  # on entry, then every 20 minutes


def test_without_renewal_the_watchdog_halts_the_instance_under_the_training(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    """What happened before #14 with `train.where: runner` (the scenario the test above guards)."""
    cfg = make_cfg(tmp_path, instance_id)
    start_step(cfg, "run-a", runtime=clock.runtime(LOG.append), services=services(cfg))
    _long_training(None, Stepper(), clock, ssm, instance_id, hours=3)
    assert instance_id in ssm.watchdog_fired
    assert ec2.inner.describe(instance_id).state == "stopped"


def test_renewal_never_readds_a_released_holder(tmp_path: Path, clock: FakeClock) -> None:
    from traingate.config import parse_config

    cfg = parse_config({"infra": {"ttl_minutes": 1}}, base_dir=tmp_path)
    keep = KeepAlive(cfg, "run-a", runtime=clock.runtime(LOG.append))
    assert keep.renew() is False  # never started: nothing to keep alive
    assert not (tmp_path / ".traingate" / "infra").exists()  # and nothing written
    start_step(cfg, "run-a", runtime=clock.runtime(LOG.append))
    assert keep.renew() is True
    clock.advance(120)  # expired: someone may already be stopping it
    assert keep.renew() is False
    assert FileLease(tmp_path / ".traingate" / "infra").read().live(clock()) == {}


def test_train_step_on_the_runner_renews_the_lease(
    project: Project, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`traingate train` with `train.where: runner` renews the holder's lease (local backend)."""
    from traingate.pipeline.train import train_step

    monkeypatch.setitem(KeepAlive.__init__.__kwdefaults__, "runtime", fake_clock.runtime())
    cfg = project.config(infra={"ttl_minutes": 60}, train={"env": {"DICE": "0.8", "IOU": "0.7"}})
    began = fake_clock()
    start_step(cfg, "run-a", runtime=fake_clock.runtime(LOG.append))
    fake_clock.advance(50 * 60)  # setup, data pull: 50 of the 60 minutes are gone
    train_step(cfg, log=lambda _line: None)
    holders = FileLease(cfg.path(cfg.infra.local_dir)).read().holders
    assert holders["run-a"] == pytest.approx(began + 110 * 60, abs=1)

"""Infra figures: readiness latency, API calls per start, and instance minutes after a cancelled run.

Everything runs against real parts where they exist: moto's ThreadedMotoServer for EC2 (through
the same boto3 adapter the CLI uses) and the SSM fake from tests/fixtures (real commands in a
sandbox, PingStatus Offline->Online after a delay on an injected clock). Time is the fake clock,
so the figures are in simulated seconds and the script finishes quickly.

1. Readiness latency: SSM comes online T s after the instance runs; how long after T does
   `infra start` notice? Compared in the same run with the field report's fixed 30 s sleep (which
   declares "ready" while SSM is not) and with fixed 10 s polling.
2. API calls per start (EC2 + SSM), from `stopped` and from `running`, against fixed 1 s polling.
3. Cancelled run: minutes the instance keeps running after the job died, with the self-stop
   watchdog (ttl) vs without it (nothing stops it within the 7-day horizon; with a scheduled
   hourly `infra reap`: lease ttl + up to one hour).
4. Per backend (shared `ec2`, `launch` on-demand, spot, spot-preferred after a refused spot
   request): infra API calls per run (start + stop, EC2 + SSM; training's own calls excluded) and
   simulated billed minutes beyond training, on the happy path (30 min of training, then stop)
   and on a cancelled run (the job dies 10 min in; only the watchdog ends it). Billing is counted
   from the start request to stopped/terminated on the fake clock (moto's transitions are
   instant, SSM comes online 90 s after the instance runs). `sagemaker` rows: Jobs-protocol calls
   for start + the job (create, polls, lease renewals) + stop on the SageMaker fake, billed minutes
   of the job beyond its training; a cancelled run is stopped by `infra stop` at once, or (last
   column) only by an hourly `infra reap` after the lease (ttl 60 min) expired.

Usage: .venv/bin/python bench/bench_infra.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _moto() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=url,
    )
    return server, url


class CountingEc2:
    """The boto3 adapter with a per-call counter (each method is one EC2 API call)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def wrapped(*a: object, **kw: object) -> object:
            self.calls += 1
            return attr(*a, **kw)

        return wrapped


def _instance(client: object, image: str) -> str:
    out = client.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge")  # type: ignore[attr-defined]
    iid = out["Instances"][0]["InstanceId"]
    client.stop_instances(InstanceIds=[iid])  # type: ignore[attr-defined]
    return str(iid)


def _cfg(base: Path, iid: str, poll_cap: float, ttl: int = 120) -> object:
    from traingate.config import parse_config

    return parse_config(
        {
            "infra": {
                "backend": "ec2",
                "instance": {"id": iid},
                "ready": ["running", "ssm"],
                "poll_cap_seconds": poll_cap,
                "ttl_minutes": ttl,
                "ready_timeout_minutes": 30,
            }
        },
        base_dir=base,
    )


def start_once(
    base: Path,
    client: object,
    image: str,
    online_after: float,
    poll_cap: float,
    *,
    from_running: bool = False,
) -> dict[str, float]:
    from tests.fixtures.ssm_fake import FakeClock, FakeSsm

    import traingate.infra.stage as stage
    from traingate.infra.ec2 import Boto3Ec2

    iid = _instance(client, image)
    ec2 = CountingEc2(Boto3Ec2(client))
    clock = FakeClock()
    ssm = FakeSsm(base / "disks", ec2=Boto3Ec2(client), clock=clock, online_after=online_after)
    ssm.register(iid)
    if from_running:
        client.start_instances(InstanceIds=[iid])  # type: ignore[attr-defined]
        ssm.tick(iid)
        clock.advance(online_after + 1)
    began = clock()
    try:
        result = stage.start_step(
            _cfg(base, iid, poll_cap),
            "bench",
            runtime=clock.runtime(lambda _: None),
            services=stage.Services(_cfg(base, iid, poll_cap), ec2=ec2, ssm=ssm),  # type: ignore[arg-type]
        )
        ready_at = result.data["waited_seconds"]
    finally:
        ssm.close()
    ssm_calls = sum(ssm.calls.values())
    return {
        "latency": ready_at - online_after,
        "elapsed": clock() - began,
        "ec2": ec2.calls,
        "ssm": ssm_calls,
    }


def fixed_polling_calls(online_after: float, interval: float) -> tuple[float, int]:
    """A naive poller: describe + ping every `interval` s until Online (same checks, no backoff)."""
    polls = -(-online_after // interval) + 1  # ceil, plus the poll at t=0
    return (polls - 1) * interval - online_after, int(polls) * 2 + 3  # + start, + test command


def watchdog_minutes(
    base: Path, client: object, image: str, ttl: int, cancel_after_min: int, horizon_min: int, watchdog: bool
) -> float:
    from tests.fixtures.ssm_fake import FakeClock, FakeSsm

    import traingate.infra.stage as stage
    from traingate.infra.ec2 import Boto3Ec2

    iid = _instance(client, image)
    clock = FakeClock()
    ec2 = Boto3Ec2(client)
    ssm = FakeSsm(base / "disks", ec2=ec2, clock=clock)
    ssm.register(iid)
    cfg = _cfg(base, iid, 5.0, ttl)
    try:
        stage.start_step(
            cfg,
            "cancelled",
            runtime=clock.runtime(lambda _: None),
            services=stage.Services(cfg, ec2=ec2, ssm=ssm),
        )  # type: ignore[arg-type]
        if not watchdog:
            (ssm.disk(iid) / ".fake" / "shutdown_at").unlink()
        clock.advance(cancel_after_min * 60)  # the job dies here: no `infra stop`
        job_end = clock()
        # One-minute steps while a watchdog could fire, then hourly: same answer, fewer API calls.
        while clock() - job_end < horizon_min * 60:
            if ec2.describe(iid).state != "running":
                break
            clock.advance(60 if clock() - job_end < 3 * ttl * 60 else 3600)
            ssm.tick(iid)
        return (clock() - job_end) / 60
    finally:
        ssm.close()


def backend_run(
    base: Path, image: str, kind: str, *, cancelled: bool, refuse_spot: bool = False, train_min: int = 30
) -> dict[str, float]:
    """One run through `infra start` -> training -> `infra stop` (or a cancelled job)."""
    import boto3
    from tests.fixtures.ssm_fake import FakeClock, LaunchedSsm

    import traingate.infra.stage as stage
    from traingate.config import parse_config
    from traingate.infra.ec2 import Boto3Ec2

    client = boto3.client("ec2", region_name="us-east-1")
    if refuse_spot:

        def refuse(params: dict, **_: object) -> None:
            from botocore.exceptions import ClientError

            if "InstanceMarketOptions" in params:
                err = {"Code": "InsufficientInstanceCapacity", "Message": "no spot capacity"}
                raise ClientError({"Error": err}, "RunInstances")

        client.meta.events.register("before-parameter-build.ec2.RunInstances", refuse)
    clock = FakeClock()
    plain = Boto3Ec2(client)
    ec2 = CountingEc2(plain)
    ssm = LaunchedSsm(base / "disks", ec2=plain, clock=clock, online_after=90)
    ttl = 60
    if kind == "ec2":
        cfg = _cfg(base, _instance(client, image), 5.0, ttl)
    else:
        market = kind.split(":", 1)[1]
        cfg = parse_config(
            {
                "infra": {
                    "backend": "launch",
                    "launch": {"image_id": image, "instance_type": "g4dn.xlarge", "market": market},
                    "ready": ["running", "ssm"],
                    "poll_cap_seconds": 5.0,
                    "ttl_minutes": ttl,
                }
            },
            base_dir=base,
        )
    svc = stage.Services(cfg, ec2=ec2, ssm=ssm)  # type: ignore[arg-type]
    quiet = {"runtime": clock.runtime(lambda _: None), "services": svc}
    began = clock()
    try:
        started = stage.start_step(cfg, "bench-run", **quiet)  # type: ignore[arg-type]
        iid = started.outputs["instance_id"]
        trained = 10 if cancelled else train_min
        clock.advance(trained * 60)
        if not cancelled:
            stage.stop_step(cfg, "bench-run", **quiet)  # type: ignore[arg-type]
        else:
            while plain.describe(iid).state == "running" and clock() - began < 7 * 24 * 3600:
                clock.advance(60)
                ssm.tick(iid)
        billed = (clock() - began) / 60
        final = plain.describe(iid).state
    finally:
        ssm.close()
    return {
        "calls": ec2.calls + sum(ssm.calls.values()),
        "beyond": billed - trained,
        "final": final,  # type: ignore[dict-item]
        "market": started.outputs["market"],  # type: ignore[dict-item]
        "warned": bool(started.warnings),
    }


SM_TRAIN = """
import json, os, pathlib, time
go = pathlib.Path(os.environ["GO_FILE"])
print("training", flush=True)
while not go.exists():
    time.sleep(0.02)
out = pathlib.Path("outputs"); out.mkdir(exist_ok=True)
(out / "metrics.json").write_text(json.dumps({"dice": 0.8, "iou": 0.7}))
"""


def sagemaker_run(
    base: Path, *, spot: bool, cancelled: bool, reaped: bool = False, train_min: int = 30
) -> dict:
    """One run with `infra.backend: sagemaker`: `infra start` (checks), `train` (one job on the
    SageMaker fake: moto records it, the fake runs it), `infra stop`; or cancelled 10 min in and
    then either `infra stop` at once (stop-infra under `if: always()`) or, when `reaped`, only an
    hourly `infra reap`. Billed = the job's time from its start to its end on the fake clock
    (SageMaker bills the training phase only; the fake ends billing at the poll that sees the
    process gone, so it overstates by at most one poll interval)."""
    import json
    import uuid

    import boto3
    from tests.fixtures.sagemaker_fake import FakeSageMaker
    from tests.fixtures.ssm_fake import FakeClock

    import traingate.infra.stage as stage
    from traingate.config import parse_config
    from traingate.infra.aws import override_clients
    from traingate.infra.remote import make_remote_executor

    folder = base / f"sm-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "train.py").write_text(SM_TRAIN)
    go = folder / "go"
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="tg-bench-sm")
    iam = boto3.client("iam", region_name="us-east-1")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
    trust = {"Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}}]}
    try:
        iam.create_role(RoleName="tg-bench", AssumeRolePolicyDocument=json.dumps(trust))
        ecr = boto3.client("ecr", region_name="us-east-1")
        ecr.create_repository(repositoryName="train")
        ecr.put_image(repositoryName="train", imageManifest=json.dumps(manifest), imageTag="latest")
    except Exception:
        pass  # made by an earlier case
    cfg = parse_config(
        {
            "project": "bench",
            "infra": {
                "backend": "sagemaker",
                "ttl_minutes": 60,
                "poll_cap_seconds": 5.0,
                "sagemaker": {
                    "role_arn": "arn:aws:iam::123456789012:role/tg-bench",
                    "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:latest",
                    "spot": spot,
                    "max_wait_minutes": 240 if spot else 0,
                    "code_s3": "s3://tg-bench-sm/code",
                },
            },
            "train": {
                "command": f"{sys.executable} train.py",
                "timeout_minutes": 120,
                "env": {"GO_FILE": str(go)},
                "artifacts": [],
            },
        },
        base_dir=folder,
    )
    clock = FakeClock()
    fake = FakeSageMaker(folder / "sm", clock=clock)
    jobs = CountingEc2(fake)
    quiet = {"runtime": clock.runtime(lambda _: None)}
    trained = 10 if cancelled else train_min

    class Cancel(KeyboardInterrupt):
        pass

    def sink(line: str) -> None:
        if line == "training":
            clock.advance(trained * 60)
            if cancelled:
                raise Cancel
            go.write_text("")

    try:
        with override_clients(sagemaker=jobs):
            stage.start_step(cfg, "bench-run", **quiet)  # type: ignore[arg-type]
            from traingate.contracts import TrainJob

            job = TrainJob(
                command=cfg.train.command,
                workdir=folder,
                env=dict(cfg.train.env),
                timeout_seconds=cfg.train.timeout_minutes * 60,
                metrics_file=cfg.train.metrics_file,
                metrics_log=cfg.train.metrics_log,
            )
            try:
                make_remote_executor(cfg, runtime=clock.runtime()).run(job, sink)
            except Cancel:
                pass
            (name,) = fake.jobs
            if not cancelled or not reaped:
                stage.stop_step(cfg, "bench-run", **quiet)  # type: ignore[arg-type]
            else:
                while fake.describe(name).status == "InProgress":
                    clock.advance(60 * 60)  # the scheduled hourly `infra reap`
                    stage.reap_step(cfg, **quiet)  # type: ignore[arg-type]
            info = fake.describe(name)
    finally:
        fake.close()
    return {
        "calls": jobs.calls,
        "beyond": (info.billable_seconds or 0) / 60 - trained,
        "final": info.status,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer cases")
    args = parser.parse_args()
    server, _ = _moto()
    import boto3

    client = boto3.client("ec2", region_name="us-east-1")
    image = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    poll_cap = 5.0
    delays = [17, 93] if args.quick else [7, 17, 43, 93, 151, 299]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            print("## 1. Readiness latency (simulated seconds after SSM came Online)")
            print(
                f"{'SSM online after':>17} | {'traingate (cap 5 s)':>19} | "
                f"{'fixed 10 s poll':>15} | fixed 30 s sleep"
            )
            worst = 0.0
            for t in delays:
                r = start_once(base, client, image, t, poll_cap)
                worst = max(worst, r["latency"])
                naive, _ = fixed_polling_calls(t, 10)
                verdict = "ok" if t <= 30 else f"WRONG: 'ready' {t - 30} s before SSM"
                print(f"{t:>15} s | {r['latency']:>17.1f} s | {naive:>13.1f} s | {verdict}")
                # the fixed sleep is "on time" only by luck; when SSM is slower it is simply wrong
            print(f"worst latency {worst:.1f} s = {worst / poll_cap:.2f}x the poll cap ({poll_cap:.0f} s)")

            print("\n## 2. API calls per `infra start` (EC2 + SSM)")
            print(f"{'case':>28} | {'EC2':>4} | {'SSM':>4} | total | fixed 1 s polling | ratio")
            for label, kw in (
                ("stopped, SSM online at 90 s", {}),
                ("already running and ready", {"from_running": True}),
            ):
                r = start_once(base, client, image, 90, poll_cap, **kw)
                total = r["ec2"] + r["ssm"]
                _, naive = fixed_polling_calls(90 if not kw else 0, 1)
                print(
                    f"{label:>28} | {r['ec2']:>4.0f} | {r['ssm']:>4.0f} | {total:>5.0f} | "
                    f"{naive:>17} | {total / naive:.2f}"
                )

            print(
                "\n## 3. Cancelled run: minutes the instance runs after the job died (job killed 10 min in)"
            )
            horizon = 7 * 24 * 60 if not args.quick else 2 * 24 * 60
            ttls = [60] if args.quick else [30, 60, 120]
            for ttl in ttls:
                with_wd = watchdog_minutes(base, client, image, ttl, 10, horizon, True)
                without = watchdog_minutes(base, client, image, ttl, 10, horizon, False)
                reaper = ttl - 10 + 60
                shown = f">= {without:.0f} (horizon)" if without >= horizon - 1 else f"{without:.0f}"
                print(
                    f"ttl {ttl:>3} min: watchdog {with_wd:.0f} min | no watchdog {shown} min | "
                    f"hourly reap only <= {reaper} min | ratio watchdog/none {with_wd / max(without, 1):.4f}"
                )

            print("\n## 4. Per backend: API calls per run and billed minutes beyond training")
            print(
                f"{'backend':>34} | {'calls/run':>9} | {'beyond, happy':>13} | "
                f"{'beyond, cancelled':>17} | end state"
            )
            for label, kind, refuse in (
                ("ec2 (shared, from stopped)", "ec2", False),
                ("launch on-demand", "launch:on-demand", False),
                ("launch spot", "launch:spot", False),
                ("launch spot-preferred, spot refused", "launch:spot-preferred", True),
            ):
                happy = backend_run(base, image, kind, cancelled=False, refuse_spot=refuse)
                cut = backend_run(base, image, kind, cancelled=True, refuse_spot=refuse)
                note = f" ({happy['market']}, warned)" if happy["warned"] else ""
                print(
                    f"{label:>34} | {happy['calls']:>9.0f} | {happy['beyond']:>9.1f} min | "
                    f"{cut['beyond']:>13.1f} min | {happy['final']} / {cut['final']}{note}"
                )
            for label, spot in (("sagemaker on-demand", False), ("sagemaker managed spot", True)):
                happy = sagemaker_run(base, spot=spot, cancelled=False)
                cut = sagemaker_run(base, spot=spot, cancelled=True)
                lost = sagemaker_run(base, spot=spot, cancelled=True, reaped=True)
                print(
                    f"{label:>34} | {happy['calls']:>9.0f} | {happy['beyond']:>9.1f} min | "
                    f"{cut['beyond']:>13.1f} min | {happy['final']} / {cut['final']} "
                    f"(no stop-infra, hourly reap: {lost['beyond']:.0f} min)"
                )
    finally:
        server.stop()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Waiting until the instance is really ready, and saying what is still missing.

Checks come from `infra.ready`: `running`, `status-ok` (instance and system status checks),
`ssm` (PingStatus Online, then a trivial command that must really return) and http(s) URLs with
`{public_ip}`/`{private_ip}` placeholders. Polling uses capped exponential backoff, so a check
that turns green is seen at most `poll_cap` seconds later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from traingate.errors import InfraError
from traingate.infra.base import WALL, Ec2, Instance, Runtime, Ssm, backoff_delays
from traingate.infra.ssm import run_command

HttpGet = Callable[[str, float], int]
READY_MARKER = "traingate-ready"


def http_status(url: str, timeout: float) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - configured URL
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def render_url(template: str, inst: Instance) -> str:
    return template.replace("{public_ip}", inst.public_ip or inst.private_ip).replace(
        "{private_ip}", inst.private_ip
    )


@dataclass
class ReadyReport:
    instance: Instance
    waited_seconds: float
    polls: int


def wait_ready(
    ec2: Ec2,
    ssm: Ssm,
    instance_id: str,
    checks: list[str],
    *,
    timeout: float,
    poll_cap: float,
    runtime: Runtime = WALL,
    http_get: HttpGet = http_status,
) -> ReadyReport:
    start = runtime.clock()
    delay = backoff_delays(min(0.5, poll_cap), poll_cap)
    done: set[str] = set()
    polls = 0
    last_missing = ""
    while True:
        polls += 1
        inst = ec2.describe(instance_id)
        missing: dict[str, str] = {}
        if inst.state != "running":
            # Nothing else can be true of an instance that is not running.
            done.clear()
            missing = {c: f"instance is {inst.state}" for c in checks}
        else:
            for check in checks:
                if check in done:
                    continue
                reason = _check(check, inst, ec2, ssm, runtime, http_get)
                if reason:
                    missing[check] = reason
                else:
                    done.add(check)
        if not missing:
            return ReadyReport(inst, runtime.clock() - start, polls)
        text = "; ".join(f"{k} ({v})" for k, v in missing.items())
        elapsed = runtime.clock() - start
        if elapsed >= timeout:
            raise InfraError(
                f"instance {instance_id} not ready after {elapsed:.0f} s; still missing: {text}",
                hint="check the missing items (SSM agent and instance profile, the service behind the "
                "health URL, status checks in the EC2 console) or raise infra.ready_timeout_minutes",
            )
        if text != last_missing:
            runtime.log(f"waiting for {instance_id} ({elapsed:.0f} s): still missing {text}")
            last_missing = text
        runtime.sleep(min(delay(), max(0.0, timeout - elapsed)))


def _check(check: str, inst: Instance, ec2: Ec2, ssm: Ssm, runtime: Runtime, http_get: HttpGet) -> str:
    """Empty string when satisfied, else why not."""
    if check == "running":
        return ""
    if check == "status-ok":
        instance_status, system_status = ec2.status_checks(inst.id)
        if instance_status == "ok" and system_status == "ok":
            return ""
        return f"instance status {instance_status}, system status {system_status}"
    if check == "ssm":
        ping = ssm.ping_status(inst.id)
        if ping != "Online":
            return f"PingStatus {ping or 'not registered'}"
        try:
            inv = run_command(
                ssm,
                inst.id,
                f"echo {READY_MARKER}",
                timeout_seconds=30,
                runtime=runtime,
                comment="traingate readiness",
            )
        except InfraError as err:  # SsmUnreachableError included
            return f"test command failed: {err.message}"
        if inv.status == "Success" and READY_MARKER in inv.stdout:
            return ""
        return f"test command ended {inv.status}"
    url = render_url(check, inst)
    try:
        code = http_get(url, 3.0)
    except OSError as err:
        return f"{url}: {getattr(err, 'reason', err)}"
    return "" if 200 <= code < 300 else f"{url}: HTTP {code}"

"""SSM: the boto3 adapter, running a command to completion, and the self-stop watchdog.

"running" is not "ready" (field report 5: a fixed 30 s wait while SSM needed 60-90 s), so
readiness asks the agent for PingStatus and then runs a trivial command that must really return.
"""

from __future__ import annotations

from typing import Any

from traingate.errors import InfraError
from traingate.infra.aws import translate_client_error
from traingate.infra.base import (
    WALL,
    CommandInvocation,
    Runtime,
    Ssm,
    SsmUnreachableError,
    backoff_delays,
)

#: Where traingate keeps its files on the instance (run folders, watchdog state).
REMOTE_ROOT = "${TRAINGATE_ROOT:-/var/lib/traingate}"


class Boto3Ssm:
    """`Ssm` over a boto3 client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def ping_status(self, instance_id: str) -> str:
        try:
            page = self.client.describe_instance_information(
                Filters=[{"Key": "InstanceIds", "Values": [instance_id]}]
            )
        except Exception as err:
            raise translate_client_error(
                err, action="ssm:DescribeInstanceInformation", resource=instance_id
            ) from err
        for info in page.get("InstanceInformationList", []):
            if info.get("InstanceId") == instance_id:
                return str(info.get("PingStatus", ""))
        return ""

    def send(self, instance_id: str, script: str, *, timeout_seconds: int, comment: str = "") -> str:
        from botocore.exceptions import ClientError

        try:
            out = self.client.send_command(
                InstanceIds=[instance_id],
                DocumentName="AWS-RunShellScript",
                Comment=comment[:100],
                TimeoutSeconds=30,  # delivery timeout; the run timeout is executionTimeout below
                Parameters={"commands": [script], "executionTimeout": [str(int(timeout_seconds))]},
            )
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("InvalidInstanceId", "InvalidInstanceInformationFilterValue"):
                raise SsmUnreachableError(
                    f"SSM cannot reach {instance_id} ({code}): the agent is not online",
                    hint="wait for PingStatus Online; check the instance profile has "
                    "AmazonSSMManagedInstanceCore and the instance can reach the SSM endpoints",
                ) from err
            raise translate_client_error(err, action="ssm:SendCommand", resource=instance_id) from err
        except Exception as err:
            raise translate_client_error(err, action="ssm:SendCommand", resource=instance_id) from err
        return str(out["Command"]["CommandId"])

    def invocation(self, command_id: str, instance_id: str) -> CommandInvocation:
        from botocore.exceptions import ClientError

        try:
            out = self.client.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        except ClientError as err:
            # Right after SendCommand the invocation may not exist yet: it is Pending, not an error.
            if err.response.get("Error", {}).get("Code", "") == "InvocationDoesNotExist":
                return CommandInvocation(command_id, "Pending")
            raise translate_client_error(
                err, action="ssm:GetCommandInvocation", resource=instance_id
            ) from err
        return CommandInvocation(
            command_id=command_id,
            status=str(out.get("Status", "Pending")),
            exit_code=int(out.get("ResponseCode", -1)),
            stdout=str(out.get("StandardOutputContent", "")),
            stderr=str(out.get("StandardErrorContent", "")),
        )


def run_command(
    ssm: Ssm,
    instance_id: str,
    script: str,
    *,
    timeout_seconds: int,
    runtime: Runtime = WALL,
    comment: str = "",
    poll_cap: float = 2.0,
) -> CommandInvocation:
    """Send a command and poll it to a terminal status (executionTimeout is always explicit:
    SSM's default of one hour killed a training run in field report 2)."""
    command_id = ssm.send(instance_id, script, timeout_seconds=timeout_seconds, comment=comment)
    delay = backoff_delays(0.2, poll_cap)
    # The service enforces executionTimeout; our own deadline only guards a lost command.
    deadline = runtime.deadline(timeout_seconds + 60)
    while True:
        inv = ssm.invocation(command_id, instance_id)
        if inv.done:
            return inv
        if runtime.clock() > deadline:
            raise InfraError(
                f"SSM command {command_id} on {instance_id} still {inv.status} after {timeout_seconds} s",
                hint="check the instance's SSM agent (Systems Manager > Run Command) and retry",
            )
        runtime.sleep(delay())


def check_command(inv: CommandInvocation, what: str, instance_id: str) -> CommandInvocation:
    if inv.status != "Success":
        detail = (inv.stderr or inv.stdout).strip()[-2000:]
        raise InfraError(
            f"{what} on {instance_id} ended {inv.status} (exit {inv.exit_code}): {detail or 'no output'}",
            hint=f"see command {inv.command_id} in Systems Manager > Run Command for the full output",
        )
    return inv


def watchdog_script(ttl_minutes: int) -> str:
    """(Re)schedule a halt in `ttl_minutes`. `shutdown -h +N` replaces any earlier schedule, so
    each renewal pushes the deadline out; it lives in systemd-logind on the instance and fires
    even when the workflow was cancelled or the runner died. With the instance's shutdown
    behaviour set to `stop` (checked by `infra start`), a halt is a stop, never a terminate."""
    minutes = int(ttl_minutes)
    root = REMOTE_ROOT
    return (
        "set -eu\n"
        f'root="{root}"\n'
        'mkdir -p "$root"\n'
        f"shutdown -h +{minutes} 'traingate watchdog: lease not renewed'\n"
        f'echo "$(( $(date +%s) + {minutes * 60} ))" > "$root/watchdog.deadline"\n'
        'echo "watchdog armed: halt at $(cat "$root/watchdog.deadline")"\n'
    )

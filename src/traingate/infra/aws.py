"""Client construction in one place.

boto3 clients are built here (with bounded retries and timeouts) so every AWS call honours
`AWS_ENDPOINT_URL` (moto's server in tests) and the same credentials chain. `override_clients`
lets tests and the end-to-end harness hand in objects for code reached through the CLI
(in-process via click's CliRunner) — chiefly the SSM fake, because moto's SSM runs nothing:

    with override_clients(ssm=FakeSsm(...)):
        CliRunner().invoke(cli, ["infra", "start"])

`ec2` and `ssm` overrides are objects of the `Ec2` / `Ssm` protocols; `s3` and `dynamodb`
overrides are boto3-compatible clients.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from traingate.errors import CredentialsError

if TYPE_CHECKING:
    from traingate.infra.base import Ec2, Ssm

_lock = threading.Lock()
_overrides: list[dict[str, Any]] = []


@contextlib.contextmanager
def override_clients(**clients: Any) -> Iterator[None]:
    """Use these objects instead of building clients (keys: ec2, ssm, s3, dynamodb, and
    sagemaker: an object of the `infra.sagemaker.Jobs` protocol)."""
    unknown = set(clients) - {"ec2", "ssm", "s3", "dynamodb", "sagemaker"}
    if unknown:
        raise TypeError(f"override_clients: unknown client(s) {sorted(unknown)}")
    with _lock:
        _overrides.append({k: v for k, v in clients.items() if v is not None})
    try:
        yield
    finally:
        with _lock:
            _overrides.pop()


def _override(name: str) -> Any:
    with _lock:
        for layer in reversed(_overrides):
            if name in layer:
                return layer[name]
    return None


def boto_client(service: str, region: str) -> Any:
    """A boto3 client with bounded retries: a dead endpoint fails in seconds, not minutes."""
    found = _override(service)
    if found is not None:
        return found
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import NoRegionError

    cfg = BotoConfig(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=10, read_timeout=30)
    try:
        return boto3.session.Session().client(service, region_name=region or None, config=cfg)
    except NoRegionError:
        raise CredentialsError(
            f"no AWS region for {service}",
            hint="set infra.region in traingate.yml or AWS_REGION",
        ) from None


def ec2_api(region: str) -> Ec2:
    found = _override("ec2")
    if found is not None:
        return found  # type: ignore[no-any-return]
    from traingate.infra.ec2 import Boto3Ec2

    return Boto3Ec2(boto_client("ec2", region))


def ssm_api(region: str) -> Ssm:
    found = _override("ssm")
    if found is not None:
        return found  # type: ignore[no-any-return]
    from traingate.infra.ssm import Boto3Ssm

    return Boto3Ssm(boto_client("ssm", region))


def translate_client_error(err: Exception, *, action: str, resource: str) -> Exception:
    """Turn botocore failures into TraingateErrors that name the IAM action and the next step."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    from traingate.errors import InfraError
    from traingate.infra.base import AccessDeniedError, CapacityError, IncorrectStateError

    if isinstance(err, NoCredentialsError):
        return CredentialsError(
            f"no AWS credentials for {action}",
            hint="in Actions use aws-actions/configure-aws-credentials (OIDC role) before this step; "
            "locally set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
        )
    if isinstance(err, EndpointConnectionError):
        return InfraError(
            f"{action} on {resource}: cannot reach the AWS endpoint ({err})",
            hint="check network access and infra.region",
        )
    if not isinstance(err, ClientError):
        return err
    code = err.response.get("Error", {}).get("Code", "")
    message = err.response.get("Error", {}).get("Message", "")
    if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
        return AccessDeniedError(
            f"{action} on {resource} was denied ({code}): the credentials lack the IAM action {action}",
            hint=f"allow `{action}` on {resource} in the role's policy (see docs/infra.md for the full "
            "policy); an explicit Deny in an SCP or permission boundary also causes this",
        )
    if code == "InsufficientInstanceCapacity":
        return CapacityError(f"{action} on {resource}: {code}: {message}")
    if code == "IncorrectInstanceState":
        return IncorrectStateError(f"{action} on {resource}: {code}: {message}")
    if code in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
        return InfraError(
            f"instance {resource} not found ({code})",
            hint="check infra.instance.id and infra.region (instances are per region)",
        )
    return InfraError(f"{action} on {resource} failed: {code}: {message}")

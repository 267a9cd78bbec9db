"""Who is using the shared instance, until when.

A lease is a set of holders, each with an expiry. `infra start` adds (or renews) its holder;
`infra stop` removes it and stops the instance only when no live holder remains; `infra reap`
stops instances whose holders all expired. Field report 2: the first of several runs to finish
stopped the instance under the others.

Three stores, one semantics:
- `DynamoLease` (infra.lease_table): one item per instance, conditional writes. Release and
  "claim the stop" are separate writes guarded by a version number, and acquiring is refused
  while a stop claim is live, so a run that acquires during a stop waits for `stopped` and then
  starts the instance again instead of believing it is running.
- `TagLease` (no table): holders recorded as instance tags. Not atomic across repositories
  (the workflow concurrency group serialises one repository); it gives `status` and `reap` the
  holders and expiries.
- `FileLease` (backend: local): a JSON file guarded by an flock, safe for two processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from traingate.errors import InfraError
from traingate.infra.base import Ec2

#: A stop claim older than this is considered abandoned (the stopper died between claim and stop).
STOP_CLAIM_SECONDS = 600


@dataclass
class LeaseState:
    # holder -> expiry (epoch seconds)
    holders: dict[str, float] = field(default_factory=dict)
    stop_claim: str = ""
    stop_claim_until: float = 0.0
    version: int = 0

    def live(self, now: float) -> dict[str, float]:
        return {h: exp for h, exp in self.holders.items() if exp > now}

    def expired(self, now: float) -> dict[str, float]:
        return {h: exp for h, exp in self.holders.items() if exp <= now}

    def stopping(self, now: float) -> bool:
        return bool(self.stop_claim) and self.stop_claim_until > now


@dataclass
class Release:
    remaining: list[str]
    # True when we atomically took the right to stop the instance (no live holder remained).
    may_stop: bool


class StopInProgress(InfraError):
    """Another run is stopping the instance right now; acquire again after it stopped."""


class Lease(Protocol):
    def read(self) -> LeaseState: ...

    def acquire(self, holder: str, ttl_seconds: float, now: float) -> LeaseState:
        """Add or renew `holder`. Raises StopInProgress while another run holds a stop claim."""
        ...

    def release(self, holder: str, now: float, *, claim_stop: bool = True) -> Release:
        """Remove `holder`; when no live holder remains and `claim_stop`, take the stop claim."""
        ...

    def claim_stop(self, claimer: str, now: float, *, force: bool = False) -> bool:
        """Take the stop claim when no live holder remains (or `force`)."""
        ...

    def clear_stop(self, claimer: str) -> None: ...


def _claim_name(holder: str) -> str:
    return hashlib.sha256(holder.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------- DynamoDB
class DynamoLease:
    """One item per instance in a table whose partition key is `instance_id` (String)."""

    def __init__(self, client: Any, table: str, instance_id: str) -> None:
        self.client = client
        self.table = table
        self.instance_id = instance_id

    def _err(self, err: Exception, action: str) -> Exception:
        from traingate.infra.aws import translate_client_error

        translated = translate_client_error(err, action=action, resource=f"table {self.table}")
        if isinstance(translated, InfraError) and "ResourceNotFoundException" in str(err):
            return InfraError(
                f"lease table {self.table} not found",
                hint="create it (partition key `instance_id`, type String; see docs/infra.md) or set "
                "infra.lease_table to an existing table",
            )
        return translated

    def _key(self) -> dict[str, Any]:
        return {"instance_id": {"S": self.instance_id}}

    @staticmethod
    def _parse(item: dict[str, Any] | None) -> LeaseState:
        if not item:
            return LeaseState()
        holders = {name: float(v["N"]) for name, v in item.get("holders", {}).get("M", {}).items()}
        return LeaseState(
            holders=holders,
            stop_claim=item.get("stop_claim", {}).get("S", ""),
            stop_claim_until=float(item.get("stop_claim_until", {}).get("N", "0")),
            version=int(item.get("version", {}).get("N", "0")),
        )

    def _ensure_item(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.put_item(
                TableName=self.table,
                Item={**self._key(), "holders": {"M": {}}, "version": {"N": "0"}},
                ConditionExpression="attribute_not_exists(instance_id)",
            )
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise self._err(err, "dynamodb:PutItem") from err
        except Exception as err:
            raise self._err(err, "dynamodb:PutItem") from err

    def read(self) -> LeaseState:
        try:
            out = self.client.get_item(TableName=self.table, Key=self._key(), ConsistentRead=True)
        except Exception as err:
            raise self._err(err, "dynamodb:GetItem") from err
        return self._parse(out.get("Item"))

    def acquire(self, holder: str, ttl_seconds: float, now: float) -> LeaseState:
        from botocore.exceptions import ClientError

        self._ensure_item()
        try:
            out = self.client.update_item(
                TableName=self.table,
                Key=self._key(),
                UpdateExpression="SET holders.#h = :exp, version = version + :one",
                ConditionExpression="attribute_not_exists(stop_claim) OR stop_claim_until < :now",
                ExpressionAttributeNames={"#h": holder},
                ExpressionAttributeValues={
                    ":exp": {"N": str(now + ttl_seconds)},
                    ":one": {"N": "1"},
                    ":now": {"N": str(now)},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                state = self.read()
                raise StopInProgress(
                    f"{state.stop_claim or 'another run'} is stopping instance {self.instance_id}",
                    hint="wait for it to stop, then start it again",
                ) from None
            raise self._err(err, "dynamodb:UpdateItem") from err
        except Exception as err:
            raise self._err(err, "dynamodb:UpdateItem") from err
        return self._parse(out.get("Attributes"))

    def release(self, holder: str, now: float, *, claim_stop: bool = True) -> Release:
        self._ensure_item()
        try:
            out = self.client.update_item(
                TableName=self.table,
                Key=self._key(),
                UpdateExpression="REMOVE holders.#h SET version = version + :one",
                ExpressionAttributeNames={"#h": holder},
                ExpressionAttributeValues={":one": {"N": "1"}},
                ReturnValues="ALL_NEW",
            )
        except Exception as err:
            raise self._err(err, "dynamodb:UpdateItem") from err
        state = self._parse(out.get("Attributes"))
        remaining = sorted(state.live(now))
        if remaining or not claim_stop:
            return Release(remaining, False)
        return Release([], self._claim(holder, now, state.version))

    def _claim(self, claimer: str, now: float, version: int | None) -> bool:
        from botocore.exceptions import ClientError

        # Guarded by the version we saw with no live holder: any acquire in between bumps it.
        condition = "version = :v" if version is not None else "attribute_exists(instance_id)"
        values: dict[str, Any] = {
            ":c": {"S": claimer},
            ":until": {"N": str(now + STOP_CLAIM_SECONDS)},
            ":one": {"N": "1"},
        }
        if version is not None:
            values[":v"] = {"N": str(version)}
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(),
                UpdateExpression="SET stop_claim = :c, stop_claim_until = :until, version = version + :one",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise self._err(err, "dynamodb:UpdateItem") from err
        return True

    def claim_stop(self, claimer: str, now: float, *, force: bool = False) -> bool:
        self._ensure_item()
        state = self.read()
        if state.live(now) and not force:
            return False
        return self._claim(claimer, now, state.version)

    def clear_stop(self, claimer: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(),
                UpdateExpression="REMOVE stop_claim, stop_claim_until SET version = version + :one",
                ConditionExpression="stop_claim = :c",
                ExpressionAttributeValues={":c": {"S": claimer}, ":one": {"N": "1"}},
            )
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise self._err(err, "dynamodb:UpdateItem") from err


# ----------------------------------------------------------------------------------------- tags
TAG_PREFIX = "traingate:lease:"
TAG_STOP = "traingate:stop-claim"


class TagLease:
    """Holders as instance tags `traingate:lease:<hash>` = `<expiry> <holder>`."""

    def __init__(self, ec2: Ec2, instance_id: str) -> None:
        self.ec2 = ec2
        self.instance_id = instance_id

    def read(self) -> LeaseState:
        tags = self.ec2.describe(self.instance_id).tags
        state = LeaseState()
        for key, value in tags.items():
            if key.startswith(TAG_PREFIX):
                expiry, _, holder = value.partition(" ")
                with contextlib.suppress(ValueError):
                    state.holders[holder] = float(expiry)
        claim = tags.get(TAG_STOP, "")
        if claim:
            until, _, who = claim.partition(" ")
            with contextlib.suppress(ValueError):
                state.stop_claim, state.stop_claim_until = who, float(until)
        return state

    def acquire(self, holder: str, ttl_seconds: float, now: float) -> LeaseState:
        state = self.read()
        if state.stopping(now):
            raise StopInProgress(
                f"{state.stop_claim} is stopping instance {self.instance_id}",
                hint="wait for it to stop, then start it again",
            )
        # Tag values are at most 256 characters.
        self.ec2.set_tags(
            self.instance_id, {TAG_PREFIX + _claim_name(holder): f"{now + ttl_seconds:.0f} {holder}"[:256]}
        )
        state.holders[holder] = now + ttl_seconds
        return state

    def release(self, holder: str, now: float, *, claim_stop: bool = True) -> Release:
        self.ec2.delete_tags(self.instance_id, [TAG_PREFIX + _claim_name(holder)])
        state = self.read()
        state.holders.pop(holder, None)
        remaining = sorted(state.live(now))
        if remaining or not claim_stop:
            return Release(remaining, False)
        return Release([], self.claim_stop(holder, now))

    def claim_stop(self, claimer: str, now: float, *, force: bool = False) -> bool:
        state = self.read()
        if state.live(now) and not force:
            return False
        self.ec2.set_tags(self.instance_id, {TAG_STOP: f"{now + STOP_CLAIM_SECONDS:.0f} {claimer}"[:256]})
        return True

    def clear_stop(self, claimer: str) -> None:
        state = self.read()
        if state.stop_claim == claimer:
            self.ec2.delete_tags(self.instance_id, [TAG_STOP])


# ----------------------------------------------------------------------------------------- file
class FileLease:
    """The local backend's lease: `lease.json` next to an flock'ed `lease.lock`.

    Besides holders it records the pretend instance's `state`, so `backend: local` goes through
    the same start/stop path (`running` after start, `stopped` after the last stop)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "lease.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        from traingate.state import atomic_write_json

        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "lease.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = self._load()
                before = json.dumps(data, sort_keys=True)
                yield data
                if json.dumps(data, sort_keys=True) != before:
                    data["version"] = int(data.get("version", 0)) + 1
                    atomic_write_json(self.path, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"holders": {}, "state": "stopped", "version": 0}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise InfraError(
                f"lease file {self.path} is corrupt: {err}",
                hint=f"delete {self.path} if no run is using the local backend",
                file=str(self.path),
            ) from None
        data.setdefault("holders", {})
        data.setdefault("state", "stopped")
        return data  # type: ignore[no-any-return]

    @staticmethod
    def _state(data: dict[str, Any]) -> LeaseState:
        return LeaseState(
            holders={k: float(v) for k, v in data.get("holders", {}).items()},
            stop_claim=data.get("stop_claim", ""),
            stop_claim_until=float(data.get("stop_claim_until", 0)),
            version=int(data.get("version", 0)),
        )

    def read(self) -> LeaseState:
        with self._locked() as data:
            return self._state(data)

    def machine_state(self) -> str:
        with self._locked() as data:
            return str(data.get("state", "stopped"))

    def set_machine_state(self, value: str, *, started_at: float | None = None) -> None:
        with self._locked() as data:
            data["state"] = value
            if started_at is not None:
                data["started_at"] = started_at

    def started_at(self) -> float | None:
        with self._locked() as data:
            value = data.get("started_at")
            return float(value) if value is not None else None

    def acquire(self, holder: str, ttl_seconds: float, now: float) -> LeaseState:
        with self._locked() as data:
            state = self._state(data)
            if state.stopping(now):
                raise StopInProgress(f"{state.stop_claim} is stopping the local instance")
            data["holders"][holder] = now + ttl_seconds
            if data.get("state") != "running":
                data["state"] = "running"
                data["started_at"] = now
            return self._state(data)

    def release(self, holder: str, now: float, *, claim_stop: bool = True) -> Release:
        with self._locked() as data:
            data["holders"].pop(holder, None)
            remaining = sorted(self._state(data).live(now))
            if remaining or not claim_stop:
                return Release(remaining, False)
            data["stop_claim"], data["stop_claim_until"] = holder, now + STOP_CLAIM_SECONDS
            return Release([], True)

    def claim_stop(self, claimer: str, now: float, *, force: bool = False) -> bool:
        with self._locked() as data:
            if self._state(data).live(now) and not force:
                return False
            data["stop_claim"], data["stop_claim_until"] = claimer, now + STOP_CLAIM_SECONDS
            return True

    def clear_stop(self, claimer: str) -> None:
        with self._locked() as data:
            if data.get("stop_claim") == claimer:
                data.pop("stop_claim", None)
                data.pop("stop_claim_until", None)

    def forget_expired(self, now: float) -> list[str]:
        with self._locked() as data:
            gone = sorted(self._state(data).expired(now))
            for h in gone:
                data["holders"].pop(h, None)
            return gone

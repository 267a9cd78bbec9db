"""`infra.backend: launch`: a fresh instance per run, on-demand, spot, or spot-preferred.

`infra start` launches one instance (RunInstances, spot market options when asked) with the
run's holder and its lease already in the tags of RunInstances itself, so there is no moment when
a launched instance is not traceable to a run: `reap` finds every launched instance by tag and
terminates the ones whose run is over (lease expired or released). Its shutdown behaviour is
`terminate`, so the watchdog's halt ends the billing, and `infra stop` terminates (idempotent).

Field report 004: a silent spot -> on-demand fallback cost 3-10x. `spot` therefore fails the step
on a capacity or price refusal, naming the AWS error; `spot-preferred` falls back to on-demand
loudly (warning, summary, `market=on-demand`) with both hourly prices and the difference per run.
"""

from __future__ import annotations

from traingate.config import Config, LaunchMarket
from traingate.errors import ConfigError, InfraError
from traingate.gha import ActionsContext
from traingate.infra.backend import Acquired, Machine, Readiness, Services, run_prefix
from traingate.infra.base import (
    GONE,
    WALL,
    Ec2Launcher,
    LaunchRequest,
    MarketUnavailableError,
    Runtime,
)
from traingate.infra.lease import TAG_PREFIX, Lease, TagLease, _claim_name
from traingate.infra.pricing import fmt_usd, on_demand_usd
from traingate.infra.shared import Ec2Machines

TAG_BACKEND = "traingate:backend"
TAG_PROJECT = "traingate:project"
TAG_HOLDER = "traingate:holder"
TAG_MARKET = "traingate:market"


class LaunchBackend(Ec2Machines):
    persistent = False
    # A stopped launched instance still bills its volume: reap terminates it too.
    reap_states: tuple[str, ...] = ("running", "pending", "stopping", "stopped")
    owns_unleased = True
    halt_verb = "terminates"

    def __init__(
        self, cfg: Config, services: Services, *, actions: ActionsContext, runtime: Runtime = WALL
    ) -> None:
        super().__init__(cfg, services, runtime=runtime)
        self.actions = actions

    @property
    def ec2(self) -> Ec2Launcher:
        return self.svc.ec2  # type: ignore[return-value]

    def lease(self, machine: Machine) -> Lease:
        # Always the instance's own tags, even with infra.lease_table: a per-run instance has one
        # holder and no contention, its lease is born in RunInstances and dies with the instance,
        # and the table would collect an item per launched instance forever.
        return TagLease(self.ec2, machine.id)

    def _scope(self) -> dict[str, str]:
        return {TAG_BACKEND: "launch", TAG_PROJECT: self.cfg.project[:256]}

    def _request(self, holder: str, expiry: float, *, spot: bool) -> LaunchRequest:
        spec = self.cfg.infra.launch
        tags = {
            "Name": f"traingate-{self.cfg.project}"[:256],
            **self._scope(),
            TAG_HOLDER: holder[:256],
            TAG_MARKET: "spot" if spot else "on-demand",
            # The lease, from the instance's first moment (same format as lease.TagLease).
            TAG_PREFIX + _claim_name(holder): f"{expiry:.0f} {holder}"[:256],
        }
        return LaunchRequest(
            tags=tags,
            template=spec.template,
            image_id=spec.image_id,
            instance_type=spec.instance_type,
            subnet_id=spec.subnet_id,
            security_group_ids=list(spec.security_group_ids),
            instance_profile=spec.instance_profile,
            spot=spot,
            max_price=spec.max_price if spot else "",
        )

    def _check_config(self) -> None:
        spec = self.cfg.infra.launch
        if not spec.template and not (spec.image_id and spec.instance_type):
            raise ConfigError(
                "infra.backend is launch but infra.launch has neither a template nor image_id and "
                "instance_type",
                hint="set infra.launch.template (lt-... or a template name), or infra.launch.image_id "
                "and infra.launch.instance_type (docs/infra.md)",
            )

    def _spot_usd(self, instance_type: str) -> float | None:
        if not instance_type:
            return None
        try:
            return self.ec2.spot_price(instance_type)
        except InfraError as err:  # a price we cannot read must not fail the launch
            self.log(f"spot price of {instance_type} unknown: {err.message}")
            return None

    def acquire(self, holder: str, ttl_seconds: float, now: float) -> Acquired:
        self._check_config()
        spec = self.cfg.infra.launch
        itype = spec.instance_type
        on_demand = on_demand_usd(itype, self.cfg.infra.hourly_cost_usd)
        mine = [m for m in self._launched({TAG_HOLDER: holder[:256]}) if m.state in ("pending", "running")]
        if mine:
            # `infra start` again for the same holder (a retried step): reuse, never a second bill.
            machine = mine[0]
            if machine.market == "spot":
                machine.hourly_usd = self._spot_usd(machine.instance_type)
            else:
                machine.hourly_usd = on_demand_usd(machine.instance_type, self.cfg.infra.hourly_cost_usd)
            self.log(f"reusing {machine.id}, already launched for {holder}")
            return Acquired(machine, summary_rows=[f"| market | {machine.market} (already launched) |"])
        if spec.market is LaunchMarket.on_demand:
            inst = self.ec2.launch(self._request(holder, now + ttl_seconds, spot=False))
            self.log(f"launched {inst.id} ({inst.instance_type or itype}, on-demand) for {holder}")
            machine = self.machine(inst)
            machine.market, machine.hourly_usd = "on-demand", on_demand
            return Acquired(machine, summary_rows=[f"| market | on-demand ({fmt_usd(on_demand)}) |"])
        spot_usd = self._spot_usd(itype)
        try:
            inst = self.ec2.launch(self._request(holder, now + ttl_seconds, spot=True))
        except MarketUnavailableError as err:
            self._terminate_strays(holder)
            if spec.market is LaunchMarket.spot:
                raise InfraError(
                    f"{err.message}; no instance was launched ({err.code})",
                    hint="retry later, raise infra.launch.max_price, choose another instance_type or "
                    "subnet (zone), or set infra.launch.market: spot-preferred to fall back to on-demand",
                ) from None
            return self._fallback(holder, now + ttl_seconds, err, spot_usd, on_demand)
        self.log(
            f"launched {inst.id} ({inst.instance_type or itype}, spot, {fmt_usd(spot_usd)}) for {holder}"
        )
        machine = self.machine(inst)
        machine.market, machine.hourly_usd = "spot", spot_usd
        row = f"| market | spot ({fmt_usd(spot_usd)}; on-demand would be {fmt_usd(on_demand)}) |"
        return Acquired(machine, summary_rows=[row])

    def _fallback(
        self,
        holder: str,
        expiry: float,
        err: MarketUnavailableError,
        spot_usd: float | None,
        od: float | None,
    ) -> Acquired:
        inst = self.ec2.launch(self._request(holder, expiry, spot=False))
        machine = self.machine(inst)
        machine.market, machine.hourly_usd = "on-demand", od
        hours = self.cfg.train.timeout_minutes / 60
        if spot_usd is not None and od is not None:
            diff = od - spot_usd
            cost = (
                f"on-demand {fmt_usd(od)} instead of spot {fmt_usd(spot_usd)}: +{fmt_usd(diff)}, up to "
                f"+${diff * hours:.2f} per run (train.timeout_minutes {self.cfg.train.timeout_minutes:g})"
            )
        else:
            cost = f"on-demand {fmt_usd(od)} instead of spot {fmt_usd(spot_usd)}" + (
                "" if od is not None else "; set infra.hourly_cost_usd to price it"
            )
        msg = (
            f"spot unavailable ({err.code}): launched {inst.id} ON-DEMAND instead (market: spot-preferred); "
            + cost
        )
        self.log(msg)
        return Acquired(
            machine,
            warnings=[msg],
            summary_rows=[f"| market | **on-demand (spot fallback: {err.code})** — {cost} |"],
        )

    def ready(self, machine: Machine) -> Readiness:
        try:
            return super().ready(machine)
        except InfraError as err:
            state = self.ec2.describe(machine.id).state
            if state not in GONE:
                raise
            why = " (spot capacity reclaimed?)" if machine.market == "spot" else ""
            raise InfraError(
                f"launched instance {machine.id} is {state} before it was ready{why}",
                hint="re-run the job; spot instances can be reclaimed at any moment "
                "(infra.launch.market: on-demand avoids it)",
            ) from err

    def _terminate_strays(self, holder: str) -> None:
        """After a refused launch: nothing of ours may be left running (a partial success)."""
        for inst in self.ec2.find("", {**self._scope(), TAG_HOLDER: holder[:256]}):
            if inst.state not in GONE:
                self.ec2.terminate(inst.id)
                self.log(f"terminated {inst.id} left by the refused launch")

    def release(self, machine: Machine, *, wait: bool) -> Machine:
        from traingate.infra.ec2 import terminate_and_wait

        final = terminate_and_wait(
            self.ec2,
            machine.id,
            wait=wait,
            timeout=self.cfg.infra.stop_timeout_minutes * 60,
            runtime=self.runtime,
            poll_cap=self.cfg.infra.poll_cap_seconds,
        )
        return self._keep_market(self.machine(final), machine)

    @staticmethod
    def _keep_market(new: Machine, old: Machine) -> Machine:
        new.market = old.market or new.market
        new.hourly_usd = old.hourly_usd if old.hourly_usd is not None else new.hourly_usd
        return new

    def _launched(self, tags: dict[str, str] | None = None) -> list[Machine]:
        found = self.ec2.find("", {**self._scope(), **(tags or {})})
        return [self.machine(i) for i in found if i.state != "terminated"]

    def locate(self, holder: str) -> list[Machine]:
        """Our instance first, then instances of other attempts of the same Actions run (a
        re-run must not leave the first attempt's instance running)."""
        ours = self._launched({TAG_HOLDER: holder[:256]})
        prefix = run_prefix(self.actions)
        if prefix:
            seen = {m.id for m in ours}
            ours += [
                self.machine(i)
                for i in self.ec2.find("", self._scope())
                if i.state != "terminated"
                and i.id not in seen
                and i.tags.get(TAG_HOLDER, "").startswith(prefix)
            ]
        return ours

    def reap_candidates(self) -> list[Machine]:
        return self._launched()

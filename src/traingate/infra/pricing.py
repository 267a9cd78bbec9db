"""Hourly prices for the spot-or-on-demand decision of `infra.backend: launch`.

Spot prices come from EC2's DescribeSpotPriceHistory (live). On-demand prices come from the table
below, not from the AWS Pricing API: that API lives in two regions only, needs its own IAM action
and is not on moto, and a silent fallback must be reported even when it cannot be reached. The
table is the public us-east-1 Linux on-demand price list (USD/hour, checked 2025); other regions
differ by a few percent. `infra.hourly_cost_usd`, when set, replaces the table's figure
(docs/infra.md).
"""

from __future__ import annotations

#: us-east-1, Linux, on-demand, USD per hour.
ON_DEMAND_USD: dict[str, float] = {
    "t3.medium": 0.0416,
    "t3.large": 0.0832,
    "t3.xlarge": 0.1664,
    "m5.large": 0.096,
    "m5.xlarge": 0.192,
    "m5.2xlarge": 0.384,
    "c5.xlarge": 0.17,
    "c5.2xlarge": 0.34,
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.4xlarge": 1.204,
    "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.4xlarge": 1.624,
    "g5.12xlarge": 5.672,
    "g6.xlarge": 0.8048,
    "g6.2xlarge": 0.9776,
    "p3.2xlarge": 3.06,
}


def on_demand_usd(instance_type: str, configured: float = 0.0) -> float | None:
    """The on-demand hourly price: `infra.hourly_cost_usd` when set, else the table, else None."""
    if configured > 0:
        return configured
    return ON_DEMAND_USD.get(instance_type)


def plain_usd(value: float) -> str:
    """`1.006`, `0.00001`: plain decimals (no exponent) for outputs and messages."""
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def fmt_usd(value: float | None) -> str:
    """`$1.006/h`, or `unknown` (never a made-up number)."""
    return "unknown" if value is None else f"${plain_usd(value)}/h"

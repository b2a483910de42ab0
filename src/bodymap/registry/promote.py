"""The promotion gate: a new model version becomes `champion` only when it beats the current one.

The primary metric (GPSm AP on the held-out set by default) must exceed the champion's by more than `margin`, and
no guard metric may drop by more than its allowance. Every version is tagged with the numbers and the decision, so
the registry itself explains why a version is or is not the champion.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bodymap.tracking import with_retry

log = logging.getLogger(__name__)

METRIC_TAG = "metric."


@dataclass(frozen=True)
class Decision:
    """Whether to promote, why, and the numbers compared."""

    promote: bool
    reason: str
    challenger: dict[str, float | None] = field(default_factory=dict)
    champion: dict[str, float | None] | None = None


def decide(
    challenger: Mapping[str, float | None],
    champion: Mapping[str, float | None] | None,
    primary: str,
    margin: float,
    guards: Mapping[str, float],
) -> Decision:
    """Compare a challenger's metrics with the champion's (None: there is no champion yet)."""
    keys = [primary, *guards]
    mine = {k: challenger.get(k) for k in keys}
    if mine[primary] is None:
        return Decision(False, f"the challenger has no value for the primary metric {primary}", mine, None)
    if champion is None:
        return Decision(True, "first version: no champion yet", mine, None)
    theirs = {k: champion.get(k) for k in keys}
    if theirs[primary] is None:
        return Decision(True, f"the champion has no {primary} to compare with", mine, theirs)
    if not mine[primary] > theirs[primary] + margin:
        return Decision(
            False,
            f"{primary} {mine[primary]:.2f} does not beat the champion's {theirs[primary]:.2f} by more than {margin}",
            mine,
            theirs,
        )
    for key, allowed in guards.items():
        if mine[key] is None or theirs[key] is None:
            continue
        if mine[key] < theirs[key] - allowed:
            return Decision(
                False,
                f"guard {key}: {mine[key]:.2f} dropped more than {allowed} below the champion's {theirs[key]:.2f}",
                mine,
                theirs,
            )
    return Decision(
        True,
        f"{primary} {mine[primary]:.2f} beats the champion's {theirs[primary]:.2f} (+{margin} margin)",
        mine,
        theirs,
    )


def metrics_from_tags(tags: Mapping[str, str]) -> dict[str, float | None]:
    """Metric values stored on a model version as `metric.<key>` tags ('none' for undefined)."""
    out: dict[str, float | None] = {}
    for key, value in tags.items():
        if key.startswith(METRIC_TAG):
            out[key[len(METRIC_TAG) :]] = None if value == "none" else float(value)
    return out


def metric_tags(metrics: Mapping[str, Any]) -> dict[str, str]:
    return {f"{METRIC_TAG}{k}": ("none" if v is None else f"{float(v):.6g}") for k, v in metrics.items()}


def promote_version(client: Any, name: str, version: str, metrics: Mapping[str, float | None], gate: dict) -> Decision:
    """Alias `version` as challenger, compare with the champion, move `champion` if it wins, tag the decision.

    Args:
        client: an `mlflow.MlflowClient`. gate: primary, margin and guards (see `decide`).
    """
    from mlflow.exceptions import MlflowException

    keys = [gate["primary"], *gate["guards"]]
    with_retry(client.set_registered_model_alias, name, "challenger", version)
    for key, value in metric_tags({k: metrics.get(k) for k in keys}).items():
        with_retry(client.set_model_version_tag, name, version, key, value)
    try:
        champion = with_retry(client.get_model_version_by_alias, name, "champion")
    except MlflowException:
        champion = None
    champion_metrics = metrics_from_tags(champion.tags) if champion is not None else None
    decision = decide(metrics, champion_metrics, gate["primary"], gate["margin"], gate["guards"])
    tags = {"decision": "promoted" if decision.promote else "rejected", "decision.reason": decision.reason}
    if champion is not None:
        tags["compared_with_version"] = str(champion.version)
    for key, value in tags.items():
        with_retry(client.set_model_version_tag, name, version, key, value)
    if decision.promote:
        with_retry(client.set_registered_model_alias, name, "champion", version)
    log.info("%s v%s: %s (%s)", name, version, tags["decision"], decision.reason)
    return decision

"""The confirmation stage: the search's best configurations and the seed's default trained
again with further seeds, then the paired verdict.

Two parts, so that the seeds can come in rounds later: :func:`run_plan` runs a
:class:`ConfirmPlan`'s (configuration, seed) runs under Ray Tune (resumable, see
:mod:`kdtune.tune.confirm`) and returns their records; :func:`confirm` is the policy that
decides which plans run: today one round, every seed of every chosen configuration at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdtune.errors import KdtuneError, SearchInterrupted
from kdtune.results import SearchResult, TrialRecord
from kdtune.search.interruption import InterruptionPolicy
from kdtune.search.records import Prepared
from kdtune.search.track import LiveTracking


@dataclass(frozen=True)
class ConfirmPlan:
    """(configuration, seed) runs as Tune trial configs (``schedule``, ``seed``, ``train``),
    and the seed default's schedule the verdict compares against."""

    default: str
    runs: list[dict[str, Any]]

    @property
    def specs(self) -> list[str]:
        return list(dict.fromkeys(run["schedule"] for run in self.runs))


def confirm(
    prepared: Prepared, result: SearchResult, tracking: LiveTracking, policy: InterruptionPolicy
) -> SearchResult:
    """The space's confirmation (if it has one): one round of all its seeds, the verdict."""
    space, say = prepared.space, prepared.request.say
    if space.confirm is None:
        return result
    plan = first_plan(space, result)
    if not plan.runs:
        say("confirmation: no trial completed, so there is nothing to confirm")
        return result
    say(
        f"confirming {len(plan.specs)} configurations ({', '.join(plan.specs)}) with "
        f"{space.confirm.seeds} further seeds each: {len(plan.runs)} runs"
    )
    result.confirmations = run_plan(prepared, plan, result, tracking, policy)
    try:
        from kdtune.verdict import verdict_of_runs

        result.verdict = verdict_of_runs(result.confirmations, plan.default, seed=0)
    except KdtuneError as exc:
        say(f"warning: no verdict: {exc}")
    return result


def first_plan(space: Any, result: SearchResult) -> ConfirmPlan:
    """The ``top_k`` best configurations and the seed default, each with ``seeds`` seeds."""
    from kdtune.config import REFERENCE_ALPHA, alpha_to_schedule
    from kdtune.tune import confirm_plan

    default = alpha_to_schedule(REFERENCE_ALPHA.get(space.level, 1.0))
    runs = confirm_plan(
        result, top_k=space.confirm.top_k, seeds=space.confirm.seeds, default_schedule=default
    )
    return ConfirmPlan(default, runs)


def run_plan(
    prepared: Prepared,
    plan: ConfirmPlan,
    result: SearchResult,
    tracking: LiveTracking,
    policy: InterruptionPolicy,
) -> list[TrialRecord]:
    """Run ``plan``'s runs (resuming an interrupted stage), each logged as it ends; their
    records. Interrupted, the records so far go with the search's ``result``."""
    from kdtune.tune import run_confirm

    def stopped(exc: SearchInterrupted) -> SearchInterrupted:
        result.confirmations = list(exc.result) if isinstance(exc.result, list) else []
        return SearchInterrupted(exc.signum, result=result)

    request = prepared.request
    try:
        return run_confirm(
            prepared.space,
            plan.runs,
            results=prepared.root,
            address=request.address,
            on_trial_end=tracking.confirm_run_ended,
            progress=request.progress,
            on_abandon=lambda exc: policy.stopped(stopped(exc)),
        )
    except SearchInterrupted as exc:
        raise stopped(exc) from None

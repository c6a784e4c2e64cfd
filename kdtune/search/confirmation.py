"""The confirmation stage, a race in rounds: the search's best configurations, the seed's
default and α = 1 trained again with further seeds, round after round, until the verdict can
tell.

Two parts: :func:`run_plan` runs a :class:`ConfirmPlan`'s (configuration, seed) runs under Ray
Tune (one resumable experiment per round, see :mod:`kdtune.tune.confirm`) and returns their
records; :class:`Race` is the policy that decides which plans run:

- round 1 trains every candidate (the ``top_k`` best, the seed default, α = 1) on
  ``confirm.seeds`` seeds;
- after each round the verdict block (:func:`kdtune.verdict.verdict_block`, at
  ``looks = max_rounds`` so that the family's 5 % is split over the rounds) is asked who the
  leader beats: those leave, and so does a configuration with a failed run (it counts against
  it and keeps it from the recommendation); the seed default and α = 1 stay in, as the block
  reports against them;
- the race stops when one candidate remains (the leader beats every other configuration still
  in, the references included), when the rest are equivalent to the leader within
  ±``confirm.margin`` AP (or beaten), or at ``confirm.max_seeds`` seeds; otherwise every
  configuration still in gets ``confirm.round_seeds`` more seeds (the references too: the
  block's answers against them firm up with the candidates').

The final block is that of the last round (the configurations still in, and those that left
with a failure: an unstable configuration is compared on the seeds it finished). Every round is
kept in ``search.json`` (``rounds``); the block under ``verdict``, with ``left``: who left in
which round and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdtune.errors import KdtuneError, SearchInterrupted
from kdtune.results import COMPLETE, SearchResult, TrialRecord
from kdtune.search.interruption import InterruptionPolicy
from kdtune.search.records import Prepared
from kdtune.search.track import LiveTracking

if TYPE_CHECKING:
    from kdtune.pooled import Fit, Run

# why a race stopped
ONE_LEFT = "one candidate remains (it beats every other still in)"
EQUIVALENT_REST = "the rest are equivalent to the leader within the margin"
MAX_SEEDS = "max_seeds reached"
NO_VERDICT = "no verdict"


@dataclass(frozen=True)
class ConfirmPlan:
    """One round's (configuration, seed) runs as Tune trial configs (``schedule``, ``seed``,
    ``train``, ``round``), and the seed default's schedule the verdict compares against."""

    default: str
    runs: list[dict[str, Any]]
    round: int = 1

    @property
    def specs(self) -> list[str]:
        return list(dict.fromkeys(run["schedule"] for run in self.runs))


@dataclass
class Race:
    """The racing policy, free of Ray: which configurations and seeds the next round runs
    (:meth:`next_plan`), and, from every run so far, who leaves and whether to stop
    (:meth:`judge`)."""

    candidates: dict[str, dict[str, Any]]  # schedule spec → the trial config it trains
    default: str
    ground_truth: str
    first_seed: int
    seeds: int
    max_seeds: int
    round_seeds: int
    margin: float
    max_rounds: int
    samples: int = 2000
    eval_every: int | None = None  # a run's evaluations: None, only at its end
    prior: list[Run] | None = None  # the search trials' runs for the pooled model; None: no model
    active: list[str] = field(default_factory=list)
    left: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    seeds_used: int = 0
    stopped: str | None = None
    block: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.active:
            self.active = list(self.candidates)

    @classmethod
    def of(
        cls,
        settings: Any,
        candidates: dict[str, dict[str, Any]],
        *,
        default: str,
        ground_truth: str,
        first_seed: int,
        samples: int = 2000,
        prior: list[Run] | None = None,
    ) -> Race:
        """A race under a space's ``confirm`` settings (:class:`kdtune.space.Confirm`);
        ``prior``, the search trials' full-budget runs (:class:`kdtune.pooled.Run`) where the
        pooled model picks (``confirm.pick: pooled`` and the runs differ only in weighting)."""
        return cls(
            candidates=candidates,
            default=default,
            ground_truth=ground_truth,
            first_seed=first_seed,
            seeds=settings.seeds,
            max_seeds=settings.max_seeds,
            round_seeds=settings.round_seeds,
            margin=settings.margin,
            max_rounds=settings.max_rounds,
            samples=samples,
            eval_every=getattr(settings, "eval_every", None),
            prior=prior,
        )

    @property
    def references(self) -> tuple[str, str]:
        return (self.default, self.ground_truth)

    def _adds(self) -> int:
        if self.seeds_used == 0:
            return self.seeds
        return max(0, min(self.round_seeds, self.max_seeds - self.seeds_used))

    def next_plan(self) -> ConfirmPlan | None:
        """The next round's runs, or None when the race is over."""
        from kdtune.tune import confirm_points

        adds = self._adds()
        if self.stopped is not None or adds == 0:
            return None
        start = self.first_seed + self.seeds_used
        configs = {spec: self.candidates[spec] for spec in self.active}
        number = len(self.rounds) + 1
        points = confirm_points(
            configs, range(start, start + adds), round=number, eval_every=self.eval_every
        )
        return ConfirmPlan(self.default, points, number)

    def judge(self, plan: ConfirmPlan, runs: Mapping[str, Mapping[int, Any]]) -> dict[str, Any]:
        """After ``plan`` ran: the block over the configurations still in (and those that left
        with a failure), who leaves, whether to stop; the round's record (also kept)."""
        from kdtune.verdict import verdict_block

        self.seeds_used += len({int(p["seed"]) for p in plan.runs})
        failed_out = [x["schedule"] for x in self.left if x["why"].startswith("failed")]
        judged = {s: runs[s] for s in [*self.active, *failed_out] if s in runs}
        record: dict[str, Any] = {
            "round": plan.round,
            "seeds": sorted({int(p["seed"]) for p in plan.runs}),
            "runs": [
                {
                    "schedule": p["schedule"],
                    "seed": int(p["seed"]),
                    "state": _state(runs.get(p["schedule"], {}).get(int(p["seed"]))),
                }
                for p in plan.runs
            ],
            "in": list(self.active),
            "left": [],
        }
        try:
            block = verdict_block(
                judged,
                default=self.default,
                ground_truth=self.ground_truth,
                margin=self.margin,
                samples=self.samples,
                seed=0,
                looks=self.max_rounds,
                model=None if self.prior is None else self._pooled_model(runs),
            )
        except KdtuneError as exc:
            record.update(leader=None, stop=True, why=f"{NO_VERDICT}: {exc}")
            self.stopped = record["why"]
            self.rounds.append(record)
            return record
        self.block = block
        leader = str(block["recommended"])
        outcome = {c["against"]: c for c in block["comparisons"]}
        leaving = self._leaving(leader, outcome, runs)
        for out in leaving:
            out.update(round=plan.round, words=_words(out["schedule"]))
            self.active.remove(out["schedule"])
        self.left += leaving
        # decided: beaten (a reference stays in, beaten) or equivalent; anything else, more seeds
        rest = [s for s in self.active if s != leader]
        decided = {s: outcome[s]["outcome"] for s in rest if s in outcome}
        undecided = [s for s in rest if decided.get(s) not in ("beats", "equivalent")]
        if not undecided and all(decided[s] == "beats" for s in rest):
            why = ONE_LEFT
        elif not undecided:
            why = f"{EQUIVALENT_REST} (±{self.margin:g} AP), or beaten"
        elif self._adds() == 0:
            why = f"{MAX_SEEDS} ({self.seeds_used} seeds)"
        else:
            why = ""
        record.update(
            leader=leader,
            leader_words=_words(leader),
            left=leaving,
            still_in=list(self.active),
            undecided=undecided,
            stop=bool(why),
            why=why or "undecided candidates remain",
        )
        if why:
            self.stopped = why
        self.rounds.append(record)
        return record

    def _pooled_model(self, runs: Mapping[str, Mapping[int, Any]]) -> Fit | None:
        """The pooled model of the search trials and every finished race run so far: the block
        picks by it among the leaders the race cannot tell apart, and (where it fits) makes its
        equivalence claims; None where too few runs identify it."""
        from kdtune.pooled import Run, fit
        from kdtune.verdict import Failure

        raced = [
            Run(spec, int(seed), float(run.ap()))
            for spec, by_seed in runs.items()
            for seed, run in by_seed.items()
            if not isinstance(run, Failure)
        ]
        return fit([*(self.prior or []), *raced])

    def _leaving(
        self, leader: str, outcome: Mapping[str, Mapping[str, Any]], runs: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """The candidates that leave after a round: any with a failed run, and any the leader
        beats (the references never leave: the block reports against them)."""
        from kdtune.verdict import Failure

        leaving: list[dict[str, Any]] = []
        for spec in list(self.active):
            if spec in self.references or spec == leader:
                continue
            failures = [
                f"seed {s} ({r.reason})"
                for s, r in sorted(runs.get(spec, {}).items())
                if isinstance(r, Failure)
            ]
            if failures:
                why = f"failed {len(failures)} run{'s' if len(failures) > 1 else ''}: "
                leaving.append({"schedule": spec, "why": why + ", ".join(failures)})
            elif spec in outcome and outcome[spec]["outcome"] == "beats":
                leaving.append({"schedule": spec, "why": f"beaten: {outcome[spec]['sentence']}"})
        return leaving

    def final_block(self) -> dict[str, Any] | None:
        """The last round's block with ``left`` (who left the race, when and why) and ``racing``
        (how the race ran) added; None when no round gave a verdict."""
        if self.block is None:
            return None
        return {
            **self.block,
            "left": list(self.left),
            "racing": {
                "rounds": len(self.rounds),
                "seeds": self.seeds_used,
                "max_seeds": self.max_seeds,
                "max_rounds": self.max_rounds,
                "stopped": self.stopped,
            },
        }


def _state(run: Any) -> str:
    from kdtune.verdict import Failure

    if run is None:
        return "missing"
    return f"failed ({run.reason})" if isinstance(run, Failure) else "complete"


def _words(spec: str) -> str:
    from kdtune.schedules import words

    return words(spec)


def confirm(
    prepared: Prepared, result: SearchResult, tracking: LiveTracking, policy: InterruptionPolicy
) -> SearchResult:
    """The space's confirmation (if it has one): the race, round by round, then its block."""
    from kdtune.config import REFERENCE_ALPHA, alpha_to_schedule
    from kdtune.tune import base_seed, confirm_candidates
    from kdtune.verdict import GROUND_TRUTH, runs_of

    space, say = prepared.space, prepared.request.say
    if space.confirm is None:
        return result
    default = alpha_to_schedule(REFERENCE_ALPHA.get(space.level, 1.0))
    prior = _pooled_prior(result) if space.confirm.pick == "pooled" else None
    order, model = _pooled_order(prior, (default, GROUND_TRUTH))
    candidates = confirm_candidates(
        result, top_k=space.confirm.top_k, references=(default, GROUND_TRUTH), order=order
    )
    if not candidates:
        say("confirmation: no trial completed, so there is nothing to confirm")
        return result
    chosen_by = _candidates_by(space.confirm.pick, prior, model)
    say(f"confirmation candidates: {chosen_by}")
    race = Race.of(
        space.confirm,
        candidates,
        default=default,
        ground_truth=GROUND_TRUTH,
        first_seed=base_seed(result) + 1,
        prior=prior,
    )
    result.confirmations, result.rounds = [], race.rounds
    while (plan := race.next_plan()) is not None:
        seeds = sorted({int(p["seed"]) for p in plan.runs})
        say(
            f"confirmation round {plan.round}: {len(plan.specs)} configurations "
            f"({'; '.join(_words(s) for s in plan.specs)}) × seeds {seeds}: {len(plan.runs)} runs"
        )
        runs = run_plan(prepared, plan, result, tracking, policy)
        result.confirmations = [*result.confirmations, *runs]
        try:
            matches = runs_of(result.confirmations)
        except KdtuneError as exc:
            say(f"warning: no verdict: {exc}")
            break
        record = race.judge(plan, matches)
        gone = "; ".join(f"{x['words']} ({x['why']})" for x in record["left"])
        say(
            f"round {plan.round}: leader {record.get('leader_words', 'none')}"
            + (f"; left: {gone}" if gone else "")
            + f"; {'stop: ' if record['stop'] else ''}{record['why']}"
        )
    result.verdict = race.final_block()
    _note_settings(result, candidates, race.references)
    if result.verdict is None:
        say("warning: no verdict: no round could be judged")
        return result
    result.verdict["candidates_by"] = chosen_by
    if result.verdict["settings_differ"]:
        say(
            "warning: the recommendation differs from the references (seed default, α 1 / β 0) "
            f"in {', '.join(result.verdict['settings_differ'])} as well as in its weighting"
        )
    return result


def _candidates_by(pick: str, prior: list[Run] | None, model: Fit | None) -> str:
    """How the race's candidates were chosen, in a sentence."""
    if model is not None:
        return f"by the pooled model of the search's {model.runs} finished trials ({model.model})"
    if pick != "pooled":
        return "the best single-seed trials (confirm.pick: mean)"
    if prior is None:
        why = "the trials differ in more than weighting and seed"
    else:
        why = f"{len(prior)} finished trials are too few for it"
    return f"the best single-seed trials (no pooled model: {why})"


def _pooled_prior(result: SearchResult) -> list[Run] | None:
    """The search trials that finished their full budget as runs of the pooled model
    (:mod:`kdtune.pooled`), or None where the trials differ in more than weighting and seed
    (a searched lr): then the model does not apply, and candidates and recommendation go by
    single-seed values and race means."""
    from kdtune.pooled import Run, differs_beyond

    done = [t for t in result.trials if t.state == COMPLETE and t.value(result.metric) is not None]
    if differs_beyond(t.config for t in done):
        return None
    return [
        Run(t.reported_schedule, int(t.config.get("seed", 0)), float(t.value(result.metric) or 0))
        for t in done
    ]


def _pooled_order(
    prior: list[Run] | None, references: Sequence[str]
) -> tuple[list[str] | None, Fit | None]:
    """The search's weightings other than the references, the pooled model's best first, and
    the model; (None, None) where there is no model (too few finished trials, or none)."""
    from kdtune.pooled import fit

    model = None if prior is None else fit(prior)
    if model is None:
        return None, None
    others = dict.fromkeys(r.schedule for r in prior or [] if r.schedule not in references)
    return model.ranked(others), model


def _note_settings(
    result: SearchResult, candidates: Mapping[str, Mapping[str, Any]], references: Sequence[str]
) -> None:
    """The references are trained at the search's best trial's settings besides the weighting;
    where the recommendation has others (the race picked a candidate with another lr), the block
    says so, since its comparisons with the references then mix the two."""
    if result.verdict is None:
        return
    best = str(result.verdict["recommended"])
    ref = candidates[references[0]]
    ignore = {"schedule", "seed", "eval_every"}
    differ = sorted(
        key
        for key in set(candidates[best]) | set(ref)
        if key not in ignore and candidates[best].get(key) != ref.get(key)
    )
    result.verdict["reference_settings"] = {
        key: ref.get(key) for key in sorted(set(ref) - ignore) if key != "schedule"
    }
    result.verdict["settings_differ"] = differ


def run_plan(
    prepared: Prepared,
    plan: ConfirmPlan,
    result: SearchResult,
    tracking: LiveTracking,
    policy: InterruptionPolicy,
) -> list[TrialRecord]:
    """Run ``plan``'s runs (resuming an interrupted round), each logged as it ends; their
    records. Interrupted, the records so far (earlier rounds' too) go with ``result``."""
    from kdtune.tune import run_confirm

    earlier = list(result.confirmations)

    def stopped(exc: SearchInterrupted) -> SearchInterrupted:
        now = list(exc.result) if isinstance(exc.result, list) else []
        result.confirmations = [*earlier, *now]
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
            round=plan.round,
            population=getattr(prepared.space.confirm, "population", 1),
        )
    except SearchInterrupted as exc:
        raise stopped(exc) from None


def replay(result: SearchResult, settings: Any, level: str, *, samples: int = 2000) -> Race:
    """The race of a finished search judged again, round by round, under this kdtune's rule,
    from its stored runs (nothing is trained): the same candidates, seeds and rounds, each
    round's block recomputed. Where today's rule would run a round the stored race did not
    (a configuration it keeps that the stored race let go, or more seeds), the replay stops
    there, said in the race's ``stopped``; the block is that of the last round replayed.
    ``settings`` is the space's ``confirm`` (:class:`kdtune.space.Confirm`), ``level`` its
    level (which names the seed default)."""
    from kdtune.config import REFERENCE_ALPHA, alpha_to_schedule
    from kdtune.verdict import GROUND_TRUTH, runs_of

    if not result.rounds or not result.confirmations:
        raise KdtuneError(f"search {result.name}: no confirmation race is stored to judge again")
    stored = runs_of(result.confirmations)
    configs = {t.reported_schedule: t.config for t in result.confirmations}
    first = result.rounds[0]
    missing = [spec for spec in first["in"] if spec not in configs]
    if missing:
        raise KdtuneError(
            f"search {result.name}: round 1 names {', '.join(missing)}, with no stored run"
        )
    default = alpha_to_schedule(REFERENCE_ALPHA.get(level, 1.0))
    prior = _pooled_prior(result) if settings.pick == "pooled" else None
    race = Race.of(
        settings,
        {spec: configs[spec] for spec in first["in"]},
        default=default,
        ground_truth=GROUND_TRUTH,
        first_seed=min(int(s) for s in first["seeds"]),
        samples=samples,
        prior=prior,
    )
    done: set[tuple[str, int]] = set()
    while (plan := race.next_plan()) is not None:
        wanted = {(str(p["schedule"]), int(p["seed"])) for p in plan.runs}
        absent = sorted(k for k in wanted if k[1] not in stored.get(k[0], {}))
        if absent:
            spec, seed = absent[0]
            race.stopped = (
                f"the stored race ends here: round {plan.round} would train {len(absent)} run"
                f"{'s' if len(absent) != 1 else ''} it did not ({_words(spec)} seed {seed}…)"
            )
            break
        done |= wanted
        runs = {
            spec: {s: r for s, r in by_seed.items() if (spec, s) in done}
            for spec, by_seed in stored.items()
        }
        race.judge(plan, {spec: by for spec, by in runs.items() if by})
    return race


def rejudge(
    name: str,
    *,
    results: Path | None = None,
    space_file: Path | None = None,
    output: Path | None = None,
) -> dict[str, Any]:
    """``kdtune rejudge NAME``: the confirmation race of finished search NAME judged again from
    its stored runs under this kdtune's rule (:func:`replay`), nothing trained and nothing
    stored changed. The space's ``confirm`` settings come from
    ``space_file``, else from the file the search ran. Returns the new block (``verdict``), its
    text, the stored block's recommendation, and how far the stored runs carried the race;
    ``output``: the new block also written there as JSON (atomically)."""
    import json
    import os

    from kdtune.paths import results_dir
    from kdtune.results import SEARCH_FILE
    from kdtune.space import load_space
    from kdtune.verdict import render

    folder = results_dir(results) / name
    if not (folder / SEARCH_FILE).is_file():
        raise KdtuneError(f"rejudge: no search named {name!r} under {folder.parent}")
    result = SearchResult.load(folder / SEARCH_FILE)
    file = space_file or (Path(result.space_file) if result.space_file else None)
    if file is None or not file.is_file():
        raise KdtuneError(
            f"rejudge: the space file {str(file)!r} of search {name!r} is not there: "
            "name it with --space"
        )
    if output is not None and not output.parent.is_dir():
        raise KdtuneError(f"rejudge: no folder {output.parent} to write {output.name} in")
    space = load_space(file)
    if space.confirm is None:
        raise KdtuneError(f"rejudge: {file} has no confirm section: there is no race to judge")
    race = replay(result, space.confirm, space.level)
    block = race.final_block()
    if block is None:
        raise KdtuneError(f"rejudge: no round of search {name!r} could be judged ({race.stopped})")
    stored = result.verdict or {}
    # what the confirmation stage adds to its last block: how the candidates were chosen (as
    # the search said), and whether the recommendation's settings differ from the references'
    judged = replace(result, verdict=block)
    _note_settings(judged, race.candidates, race.references)
    block = {**(judged.verdict or block), "candidates_by": stored.get("candidates_by")}
    if output is not None:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(json.dumps(block, indent=1) + "\n")
        os.replace(tmp, output)
    return {
        "search": name,
        "space_file": str(file),
        "stored_recommended": stored.get("recommended"),
        "recommended": block["recommended"],
        "rounds_replayed": len(race.rounds),
        "rounds_stored": len(result.rounds),
        "stopped": race.stopped,
        "verdict": block,
        "text": render(block),
    }

"""How sure a recommendation is: the verdict block a user reads after a confirmation.

Input: per configuration (a schedule spec), per training seed, the matching of its validation
detections (:class:`~kdtune.evaluate.ImageMatches`) or a :class:`Failure`. Output: a plain,
JSON-native record (:func:`verdict_block`, stored in ``search.json`` and on the MLflow parent
run) and one text rendering of it (:func:`render`). The block says

- **distillation's worth**: the best distilled configuration against α = 1 (``fixed:0``,
  ground truth only);
- **the recommendation against the seed default**;
- **the configurations equivalent to the best** within ±``margin`` AP;

each as "beats", "trails", "equivalent within ±0.005" or "undecided: about N more seeds
would tell", every claim of the block held together at 5 % family-wise (Holm).

How each number is computed (docs/statistics.md has the whole account):

- a paired difference uses the seeds both configurations finished and the same images; its
  image part comes from one shared bootstrap over images (each replicate redraws the images
  with replacement and recomputes AP exactly from the matchings), its seed part from the
  spread of the per-seed differences at R − 1 degrees of freedom; :mod:`kdtune.inference`
  combines them (Student's t, Welch–Satterthwaite);
- "differs" is a two-sided t test, "equivalent" two one-sided tests (TOST) against ±margin;
  Holm's step-down runs over both claims of *every pair* of configurations in the block (the
  recommendation is picked by the data, so the pairs it could have been compared in are all in
  the family);
- a failed or diverged run is listed and counts against its configuration: a configuration with
  a failure is not recommended while one without failures exists; ranking and tests use the
  seeds every configuration without failures finished.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kdtune.errors import KdtuneError
from kdtune.evaluate import (
    DETECTIONS_FILE,
    ImageMatches,
    ap_replicates,
    image_draws,
    load_matches,
)
from kdtune.inference import (
    PairedEstimate,
    check_level,
    holm_tests,
    paired_estimate,
    seeds_needed,
    t_cdf,
    t_quantile,
)
from kdtune.paired import (
    check_images,
)
from kdtune.results import COMPLETE, FAILED, TrialRecord
from kdtune.schedules import words

SAMPLES = 2000  # bootstrap replicates over images
CONFIDENCE = 0.95  # of each interval; the family-wise level of the block's claims is 1 − this
MARGIN = 0.005  # AP: differences within ±MARGIN count as equivalent
GROUND_TRUTH = "fixed:0"  # α = 1, β = 0: the student trained on ground truth alone
VERSION = 2  # of the record's layout

BEATS, TRAILS, EQUIVALENT, UNDECIDED = "beats", "trails", "equivalent", "undecided"
ROLE_DEFAULT, ROLE_WORTH, ROLE_RUNNER_UP, ROLE_OTHER = (
    "seed default",
    "distillation's worth",
    "runner-up",
    "other",
)
_ROLE_ORDER = (ROLE_DEFAULT, ROLE_RUNNER_UP, ROLE_WORTH, ROLE_OTHER)


BY_RACE, BY_MODEL = "race", "pooled model"


class Model(Protocol):
    """What the block asks of a model of AP over the weighting fitted to every full-budget run
    of a search (:class:`kdtune.pooled.Fit`): a predicted difference with its standard error,
    its residual degrees of freedom, whether the runs contradict its shape (``fits``, from the
    ``lack_of_fit`` test's p), the best of some configurations, and a plain record of it."""

    @property
    def model(self) -> str: ...

    @property
    def runs(self) -> int: ...

    @property
    def seeds(self) -> int: ...

    @property
    def dof(self) -> int: ...

    @property
    def fits(self) -> bool: ...

    @property
    def lack_of_fit(self) -> float | None: ...

    def difference(self, a: str, b: str) -> tuple[float, float]: ...

    def best(self, specs: Iterable[str]) -> str: ...

    def record(self, specs: Sequence[str]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Failure:
    """A run that gave no model to judge (it failed, or its loss diverged)."""

    reason: str


Run = ImageMatches | Failure


# --- the block ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """A configuration's final validation AP per confirmation seed, its mean and standard
    error (0 with a single seed: nothing measures its spread)."""

    schedule: str
    values: dict[int, float]

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values())))

    @property
    def se(self) -> float:
        n = len(self.values)
        return float(np.std(list(self.values.values()), ddof=1) / math.sqrt(n)) if n > 1 else 0.0


def rank(values: Mapping[str, Mapping[int, float]]) -> list[Standing]:
    """Configurations (schedule spec → seed → final AP) by mean AP, best first."""
    standings = [Standing(spec, dict(v)) for spec, v in values.items() if v]
    return sorted(standings, key=lambda s: -s.mean)


def label(spec: str) -> str:
    """A schedule as a reader names it, the spec after it: ``α 0.1 / β 0.9 [fixed:0.9]``."""
    spoken = words(spec)
    return spoken if spoken == spec else f"{spoken} [{spec}]"


def verdict_block(
    runs: Mapping[str, Mapping[int, Run]],
    *,
    default: str,
    ground_truth: str = GROUND_TRUTH,
    margin: float = MARGIN,
    confidence: float = CONFIDENCE,
    samples: int = SAMPLES,
    seed: int = 0,
    looks: int = 1,
    model: Model | None = None,
) -> dict[str, Any]:
    """The verdict block of ``runs`` (schedule spec → training seed → matching or failure).

    ``default`` is the seed's default schedule, ``ground_truth`` the α = 1 schedule; ``margin``
    the equivalence margin (AP), ``confidence`` each interval's level (the block's claims hold
    together at 1 − confidence), ``looks`` how many times a race will look at the same
    configurations (the family's level is split evenly over them). A racing round calls this
    after each round; :func:`race` reads what it needs from the record.

    The recommendation is the configuration of highest mean AP among those with the fewest
    failures. With a ``model`` (the pooled model of every full-budget run of the search,
    :mod:`kdtune.pooled`), two things change: among that leader and those it does not beat
    (claims held), the recommendation is the one the model predicts best (said in the record's
    ``picked``); and where the model fits its runs, every pair also gets a third claim,
    *equivalent by the model* (its predicted difference inside ±margin by two one-sided t
    tests at its residual degrees of freedom, the race's own paired mean inside ±margin and
    consistent with the model's), in the same Holm family as the paired claims."""
    _check_block_args(margin, confidence, samples, looks)
    m = _measure(runs, samples, seed)
    standings = rank(m.ap)
    failed_count = {spec: len(m.failures.get(spec, {})) for spec in m.ap}
    fewest = min(failed_count.values())
    best = next(s.schedule for s in standings if failed_count[s.schedule] == fewest)
    level = (1.0 - confidence) / looks
    claimable = model if model is not None and model.fits else None
    pairs, claims, family, modelled = _family(m, standings, level, margin, looks, claimable)
    picked = None
    if model is not None:
        open_ = [best] + [
            s.schedule
            for s in standings
            if s.schedule != best
            and failed_count[s.schedule] == fewest
            and not _beaten(best, s.schedule, pairs, claims)
        ]
        picked = _pick(model, open_)
        if picked is not None:
            best = str(picked["recommended"])
    others = [s.schedule for s in standings if s.schedule != best]
    roles = _roles(standings, best, others, default, ground_truth, failed_count, fewest)
    comparisons = []
    for other in others:
        key, flip = ((best, other), False) if (best, other) in pairs else ((other, best), True)
        if key not in pairs:
            continue
        est = pairs[key]
        if flip:
            est = est.negated()
        shared = [s for s in m.used[best] if s in m.used[other]]
        by_model = modelled.get(key)
        if by_model is not None and flip:
            by_model = by_model.flipped()
        comparisons.append(
            _comparison(
                best,
                other,
                roles[other] or [ROLE_OTHER],
                est,
                [m.ap[best][s] - m.ap[other][s] for s in shared],
                claims.get(key),
                by_model,
                default=default,
                margin=margin,
                confidence=confidence,
                level=level,
                family=family,
            )
        )
    comparisons.sort(key=lambda c: _ROLE_ORDER.index(c["role"]))
    block: dict[str, Any] = {
        "version": VERSION,
        "recommended": best,
        "recommended_words": words(best),
        "default": default,
        "ground_truth": ground_truth,
        "margin": margin,
        "confidence": confidence,
        "family": family,
        "model": _model_record(model, claimable),
        "seeds": m.common,
        "images": m.images,
        "ranking": _ranking(standings, m.failures, failed_count, fewest, best),
        "failures": [
            {"schedule": spec, "seed": s, "reason": reason}
            for spec, by_seed in sorted(m.failures.items())
            for s, reason in sorted(by_seed.items())
        ],
        "passed_over": [
            s.schedule
            for s in standings[: [x.schedule for x in standings].index(best)]
            if failed_count[s.schedule] > fewest
        ],
        "comparisons": comparisons,
        "equivalent": [c["against"] for c in comparisons if c["outcome"] == EQUIVALENT],
    }
    if picked is not None:
        block["picked"] = picked
    block["race"] = race(block)
    block["sentence"] = comparisons[0]["sentence"] if comparisons else _alone(standings[0])
    return block


def _beaten(
    leader: str,
    other: str,
    pairs: Mapping[tuple[str, str], PairedEstimate],
    claims: Mapping[tuple[str, str], tuple[float | None, ...]],
) -> bool:
    """Whether the block's claims hold that ``leader`` (of highest mean) beats ``other``."""
    key = (leader, other) if (leader, other) in pairs else (other, leader)
    held = claims.get(key)
    if key not in pairs or held is None or held[0] is None:
        return False
    return (pairs[key].mean > 0) == (key[0] == leader)


def _check_block_args(margin: float, confidence: float, samples: int, looks: int) -> None:
    check_level(margin, confidence)
    if not isinstance(samples, int) or samples < 100:
        raise KdtuneError(f"verdict: samples must be an integer of at least 100, got {samples}")
    if not isinstance(looks, int) or looks < 1:
        raise KdtuneError(f"verdict: looks must be a positive integer, got {looks}")


@dataclass(frozen=True)
class _Measured:
    """What a block is computed from: each configuration's finished runs and failures, the seeds
    every stable configuration finished (``common``) and each one's seeds among them (``used``),
    the images, each run's AP and its bootstrap replicates over the same image draws."""

    failures: dict[str, dict[int, str]]
    common: list[int]
    used: dict[str, list[int]]
    images: int
    ap: dict[str, dict[int, float]]
    reps: dict[str, dict[int, np.ndarray]]


def _measure(runs: Mapping[str, Mapping[int, Run]], samples: int, seed: int) -> _Measured:
    finished, failures = _split(runs)
    if not finished:
        raise KdtuneError("confirmation: no configuration finished a confirmation run")
    stable = [spec for spec in finished if spec not in failures]
    pool = stable or list(finished)
    common = sorted(set.intersection(*(set(finished[spec]) for spec in pool)))
    if not common:
        raise KdtuneError(
            "verdict: no seed that every configuration finished "
            f"({', '.join(f'{s}: {sorted(finished[s])}' for s in pool)})"
        )
    used = {spec: [s for s in common if s in by_seed] for spec, by_seed in finished.items()}
    used = {spec: seeds for spec, seeds in used.items() if seeds}
    images = check_images(
        (f"{spec} seed {s}", finished[spec][s]) for spec, seeds in used.items() for s in seeds
    )
    draws = image_draws(len(images), samples, seed)
    ap = {spec: {s: finished[spec][s].ap() for s in seeds} for spec, seeds in used.items()}
    reps = {
        spec: {s: ap_replicates(finished[spec][s], draws) for s in seeds}
        for spec, seeds in used.items()
    }
    return _Measured(failures, common, used, len(images), ap, reps)


def _family(
    m: _Measured,
    standings: Sequence[Standing],
    level: float,
    margin: float,
    looks: int,
    model: Model | None,
) -> tuple[
    dict[tuple[str, str], PairedEstimate],
    dict[tuple[str, str], tuple[float | None, ...]],
    dict[str, Any],
    dict[tuple[str, str], ModelDifference],
]:
    """Every pair's paired estimate and its claims (differs, equivalent within the margin, and,
    given a ``model``, equivalent by the model), held together by Holm's procedure at
    ``level``. Of one pair's claims at most two can be false discoveries at once (its two
    equivalence claims share one null hypothesis, which excludes the difference's), so Holm's
    cap is two per pair with a model, one without."""
    pairs: dict[tuple[str, str], PairedEstimate] = {}
    for a, b in combinations([s.schedule for s in standings], 2):
        shared = [s for s in m.used[a] if s in m.used[b]]
        if not shared:
            continue
        per_seed = [m.ap[a][s] - m.ap[b][s] for s in shared]
        diff_reps = np.stack([m.reps[a][s] - m.reps[b][s] for s in shared], axis=1)
        pairs[(a, b)] = paired_estimate(per_seed, diff_reps, m.images)
    keys = [k for k, est in pairs.items() if est.seeds_measured]
    modelled = {}
    if model is not None:
        for k in keys:
            mean, se = model.difference(*k)
            modelled[k] = ModelDifference(mean, se, model.dof, pairs[k])
    order = [pairs[k].p_differs(level) for k in keys] + [
        pairs[k].p_equivalent(margin, level) for k in keys
    ]
    tests = [_differs_test(pairs[k]) for k in keys] + [
        _equivalent_test(pairs[k], margin) for k in keys
    ]
    order += [modelled[k].p_equivalent(margin) for k in modelled]
    tests += [_model_test(modelled[k], margin) for k in modelled]
    per_pair = 3 if modelled else 2
    held = holm_tests(order, tests, level, cap=(per_pair - 1) * len(keys))
    n = len(keys)
    claims = {k: tuple(held[j * n + i] for j in range(per_pair)) for i, k in enumerate(keys)}
    family = {
        "method": "Holm",
        "level": level,
        "pairs": len(keys),
        "claims": per_pair * len(keys),
        "model_claims": len(modelled),
        "looks": looks,
    }
    return pairs, claims, family, modelled


@dataclass(frozen=True)
class ModelDifference:
    """The model's predicted difference of a pair (mean, se at ``dof`` residual degrees of
    freedom) beside the race's own paired estimate of it."""

    mean: float
    se: float
    dof: int
    race: PairedEstimate

    def flipped(self) -> ModelDifference:
        """The same pair the other way round."""
        return ModelDifference(-self.mean, self.se, self.dof, self.race.negated())

    def interval(self, confidence: float) -> tuple[float, float]:
        half = t_quantile(1.0 - (1.0 - confidence) / 2.0, self.dof) * self.se
        return self.mean - half, self.mean + half

    def p_equivalent(self, margin: float) -> float:
        """TOST p-value of "the model's difference is at least ``margin`` away from 0"."""
        if self.se <= 0:
            return 0.0 if abs(self.mean) < margin else 1.0
        below = 1.0 - t_cdf((self.mean + margin) / self.se, self.dof)
        above = t_cdf((self.mean - margin) / self.se, self.dof)
        return max(below, above)

    def consistent(self, margin: float, confidence: float = CONFIDENCE) -> bool:
        """Whether the race's own paired mean lies inside ±``margin`` and within its
        ``confidence`` interval of the model's difference (the race not contradicting the
        model on this pair): a claim by the model needs it."""
        r = self.race
        if abs(r.mean) >= margin:
            return False
        tail = (1.0 - confidence) / 2.0
        gap = t_quantile(1.0 - tail, r.df(tail)) * math.sqrt(r.var + self.se**2)
        return abs(r.mean - self.mean) <= gap


def _roles(
    standings: Sequence[Standing],
    best: str,
    others: Sequence[str],
    default: str,
    ground_truth: str,
    failed_count: Mapping[str, int],
    fewest: int,
) -> dict[str, list[str]]:
    """What each configuration other than the recommendation is to it: the seed default, the
    runner-up, distillation's worth (α = 1, or the best distilled one when α = 1 leads)."""
    distilled = [s.schedule for s in standings if s.schedule != ground_truth]
    best_distilled = next(
        (s for s in distilled if failed_count[s] == fewest), distilled[0] if distilled else None
    )
    roles: dict[str, list[str]] = {spec: [] for spec in others}
    if default in roles:
        roles[default].append(ROLE_DEFAULT)
    if others:
        roles[others[0]].append(ROLE_RUNNER_UP)
    if best != ground_truth and ground_truth in roles:
        roles[ground_truth].append(ROLE_WORTH)
    elif best == ground_truth and best_distilled in roles:
        roles[str(best_distilled)].append(ROLE_WORTH)
    return roles


def _ranking(
    standings: Sequence[Standing],
    failures: Mapping[str, Mapping[int, str]],
    failed_count: Mapping[str, int],
    fewest: int,
    best: str,
) -> list[dict[str, Any]]:
    """The ranking, the recommendation first, then by mean AP: configurations with more
    failures rank below."""
    return [
        {
            "schedule": s.schedule,
            "words": words(s.schedule),
            "mean": s.mean,
            "se": s.se,
            "values": {str(k): v for k, v in sorted(s.values.items())},
            "failed": {str(k): r for k, r in sorted(failures.get(s.schedule, {}).items())},
        }
        for s in sorted(
            standings, key=lambda s: (failed_count[s.schedule] > fewest, s.schedule != best)
        )
    ]


def _differs_test(est: PairedEstimate) -> Callable[[float], bool]:
    return lambda level: est.p_differs(level) <= level


def _equivalent_test(est: PairedEstimate, margin: float) -> Callable[[float], bool]:
    return lambda level: est.p_equivalent(margin, level) <= level


def _model_test(d: ModelDifference, margin: float) -> Callable[[float], bool]:
    consistent = d.consistent(margin)
    return lambda level: consistent and d.p_equivalent(margin) <= level


def _pick(model: Model, open_: Sequence[str]) -> dict[str, Any] | None:
    """Among the leader and those it does not beat (``open_``, the leader first), the one the
    model predicts best, with why; None where there is nothing to pick among."""
    if len(open_) < 2:
        return None
    return {
        "recommended": model.best(open_),
        "by": BY_MODEL,
        "leader_by_mean": open_[0],
        "among": list(open_),
        **model.record(open_),
    }


def _model_record(model: Model | None, claimable: Model | None) -> dict[str, Any] | None:
    """What the block says of the model: none given; given, and whether claims rest on it."""
    if model is None:
        return None
    return {
        "model": model.model,
        "runs": model.runs,
        "seeds": model.seeds,
        "dof": model.dof,
        "lack_of_fit": model.lack_of_fit,
        "claims": claimable is not None,
    }


def _split(
    runs: Mapping[str, Mapping[int, Run]],
) -> tuple[dict[str, dict[int, ImageMatches]], dict[str, dict[int, str]]]:
    """The finished runs and the failures, per configuration."""
    if not isinstance(runs, Mapping):
        raise KdtuneError("verdict: expected configuration → seed → matching or failure")
    finished: dict[str, dict[int, ImageMatches]] = {}
    failures: dict[str, dict[int, str]] = {}
    for spec, by_seed in runs.items():
        for s, run in by_seed.items():
            if isinstance(run, Failure):
                failures.setdefault(spec, {})[int(s)] = run.reason
            elif isinstance(run, ImageMatches):
                finished.setdefault(spec, {})[int(s)] = run
            else:
                raise KdtuneError(
                    f"verdict: {spec} seed {s}: expected a matching or a Failure, "
                    f"got {type(run).__name__}"
                )
    return finished, failures


def _comparison(
    best: str,
    other: str,
    roles: list[str],
    est: PairedEstimate,
    per_seed: list[float],
    held: tuple[float | None, ...] | None,
    by_model: ModelDifference | None,
    *,
    default: str,
    margin: float,
    confidence: float,
    level: float,
    family: Mapping[str, Any],
) -> dict[str, Any]:
    low, high = est.interval(confidence)
    outcome, more, by, claim_level = UNDECIDED, None, None, None
    if held is not None:
        claim_level = next((x for x in held if x is not None), None)
        if held[0] is not None:
            outcome, by = (BEATS if est.mean > 0 else TRAILS), BY_RACE
        elif held[1] is not None:
            outcome, by = EQUIVALENT, BY_RACE
        elif len(held) > 2 and held[2] is not None:
            outcome, by = EQUIVALENT, BY_MODEL
        else:
            cap = int(family["claims"]) - int(family["pairs"])  # Holm's first step: level / cap
            more = seeds_needed(est, margin, level / max(cap, 1))
    record: dict[str, Any] = {
        "against": other,
        "subject": best,
        "role": min(roles, key=_ROLE_ORDER.index),
        "roles": roles,
        "mean": est.mean,
        "low": low,
        "high": high,
        "se": est.se,
        "df": est.df((1.0 - confidence) / 2.0),
        "seed_sd": est.seed_sd,
        "image_se": math.sqrt(est.image_var),
        "per_seed": per_seed,
        "seeds": est.seeds,
        "images": est.images,
        "seeds_measured": est.seeds_measured,
        "p_differs": est.p_differs(level),
        "p_equivalent": est.p_equivalent(margin, level),
        "claim_level": claim_level,
        "outcome": outcome,
        "by": by,
        "more_seeds": None if more is None else more - est.seeds,
    }
    if by_model is not None:
        m_low, m_high = by_model.interval(confidence)
        record["model"] = {
            "mean": by_model.mean,
            "se": by_model.se,
            "low": m_low,
            "high": m_high,
            "dof": by_model.dof,
            "p_equivalent": by_model.p_equivalent(margin),
            "consistent": by_model.consistent(margin, confidence),
        }
    record["sentence"] = _sentence(record, default=default, margin=margin, family=family)
    return record


def _name(spec: str, default: str, ground_truth: str = GROUND_TRUTH) -> str:
    if spec == default:
        return f"the seed default {words(spec)}"
    if spec == ground_truth:
        return f"ground truth alone ({words(spec)})"
    return words(spec)


def _sentence(
    c: Mapping[str, Any], *, default: str, margin: float, family: Mapping[str, Any]
) -> str:
    a, b = _name(c["subject"], default), _name(c["against"], default)
    figures = f"{c['mean']:+.3f} AP [{c['low']:+.3f}, {c['high']:+.3f}]"
    size = f"({c['seeds']} seed{'s' if c['seeds'] != 1 else ''} × {c['images']} images)"
    if not c["seeds_measured"]:
        return (
            f"{a} against {b}: {figures} on these images only; one seed says nothing "
            f"about other seeds, so no claim {size}"
        )
    held = f"Holm, {family['claims']} claims at {percent(family['level'])} family-wise"
    if c["outcome"] == BEATS:
        return f"{a} beats {b} by {figures}; {held} {size}"
    if c["outcome"] == TRAILS:
        return f"{a} trails {b} by {figures}; {held} {size}"
    if c["outcome"] == EQUIVALENT and c.get("by") == BY_MODEL:
        d = c["model"]
        return (
            f"{a} is equivalent to {b} within ±{margin:g} AP by the pooled model: "
            f"{d['mean']:+.4f} AP [{d['low']:+.4f}, {d['high']:+.4f}] (the race alone: "
            f"{figures}); {held} {size}"
        )
    if c["outcome"] == EQUIVALENT:
        return f"{a} is equivalent to {b} within ±{margin:g} AP: {figures}; {held} {size}"
    more = c["more_seeds"]
    tell = (
        f"about {more} more seed{'s' if more != 1 else ''} would tell"
        if more is not None
        else "more seeds alone are unlikely to tell (the images' spread, or a mean near the margin)"
    )
    return f"{a} against {b} is undecided: {figures}; {tell}; {held} {size}"


def _alone(best: Standing) -> str:
    return (
        f"{label(best.schedule)} was the only configuration confirmed: mean AP "
        f"{best.mean:.3f} ± {best.se:.3f} over {len(best.values)} seeds; nothing to compare"
    )


def race(block: Mapping[str, Any]) -> dict[str, Any]:
    """What a racing round needs from a block: the leader, the configurations it beats (they
    leave the race), those equivalent to it, those still undecided, and whether to stop (no
    undecided configuration left: one remains, or the rest are equivalent)."""
    by = {
        o: [c["against"] for c in block["comparisons"] if c["outcome"] == o]
        for o in (BEATS, TRAILS, EQUIVALENT, UNDECIDED)
    }
    stop = not by[UNDECIDED] and not by[TRAILS]
    if not block["comparisons"]:
        why = "one configuration"
    elif not stop:
        why = "undecided configurations remain"
    elif by[EQUIVALENT]:
        why = f"the rest are beaten or equivalent within ±{block['margin']:g} AP"
    else:
        why = "the leader beats every other configuration"
    return {
        "leader": block["recommended"],
        "beaten": by[BEATS],
        "beats_leader": by[TRAILS],
        "equivalent": by[EQUIVALENT],
        "undecided": by[UNDECIDED],
        "stop": stop,
        "why": why,
    }


def render(block: Mapping[str, Any]) -> str:
    """The block as a person reads it, one statement a line."""
    best = block["recommended"]
    top = next(r for r in block["ranking"] if r["schedule"] == best)
    n = len(top["values"])
    lines = [
        f"recommendation: {label(best)}, mean AP {top['mean']:.3f} ± {top['se']:.3f} "
        f"(standard error over {n} seed{'s' if n != 1 else ''})"
    ]
    picked = block.get("picked")
    if picked:
        lines.append(_picked_line(picked))
    for spec in block.get("passed_over", []):
        failed = next(r["failed"] for r in block["ranking"] if r["schedule"] == spec)
        lines.append(
            f"not recommended: {label(spec)} ranks higher but failed {len(failed)} run"
            f"{'s' if len(failed) != 1 else ''}"
        )
    comps = block["comparisons"]
    worth = next((c for c in comps if ROLE_WORTH in c["roles"]), None)
    lines.append(
        f"distillation's worth: {worth['sentence']}"
        if worth
        else "distillation's worth: not measured (α 1 / β 0 was not confirmed beside it)"
    )
    default = next((c for c in comps if ROLE_DEFAULT in c["roles"]), None)
    if default is not None:
        lines.append(f"against the seed default: {default['sentence']}")
    elif best == block["default"]:
        lines.append("against the seed default: the recommendation is the seed default")
    margin = block["margin"]
    by_model = {c["against"] for c in comps if c.get("by") == BY_MODEL}
    equivalent = [
        label(s) + (" (by the pooled model)" if s in by_model else "") for s in block["equivalent"]
    ]
    lines.append(
        f"equivalent to the best within ±{margin:g} AP: "
        + (", ".join(equivalent) if equivalent else "none yet")
    )
    for c in comps:
        if c is worth or c is default:
            continue
        lines.append(f"  {c['sentence']}")
    for f in block["failures"]:
        lines.append(
            f"failed: {label(f['schedule'])} seed {f['seed']} ({f['reason']}); counted against it"
        )
    family = block["family"]
    kinds = "differs/equivalent"
    if family.get("model_claims"):
        kinds += "/equivalent by the model"
    lines.append(
        f"all claims together at {percent(family['level'])} family-wise "
        f"(Holm over {family['pairs']} pairs × {kinds}); "
        f"seeds {block['seeds']}, {block['images']} images"
    )
    model = block.get("model")
    if model:
        lines.append(_model_line(model))
    return "\n".join(lines)


def _model_line(model: Mapping[str, Any]) -> str:
    """Whether claims rest on the pooled model, and why not where they do not."""
    lof = model.get("lack_of_fit")
    test = "not testable" if lof is None else f"lack of fit p = {lof:.2f}"
    fitted = f"the pooled model ({model['model']}; {model['runs']} runs, {test})"
    if model["claims"]:
        return (
            f'{fitted}: claims "by the pooled model" rest on AP being smooth in β̄ '
            f"(mean β over training); the race's own means must agree with it"
        )
    return f"{fitted} does not fit the runs: no claim rests on it"


def _picked_line(picked: Mapping[str, Any]) -> str:
    """How the pooled model chose among the leaders the race could not tell apart."""
    gain = picked["gain"]
    among = "; ".join(
        f"{words(s)} {gain[s]['mean']:+.4f} ± {gain[s]['se']:.4f}"
        if gain[s]["se"] > 0 or gain[s]["mean"] != 0
        else f"{words(s)} 0 (the baseline)"
        for s in picked["among"]
    )
    return (
        f"picked by the pooled model of all {picked['runs']} full-budget runs "
        f"({picked['seeds']} seeds; {picked['model']}) among those the race cannot tell apart, "
        f"by predicted AP over α 1 / β 0: {among}"
    )


def percent(level: float) -> str:
    """A level as a percentage with up to three significant figures: 5%, 2.5%, 1.67%."""
    return f"{level * 100:.3g}%"


# --- today's callers -------------------------------------------------------------------------


def confirm_verdict(
    matches: Mapping[str, Mapping[int, Run]],
    default: str,
    *,
    samples: int = SAMPLES,
    seed: int = 0,
    margin: float = MARGIN,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """:func:`verdict_block` of the confirmation stage (a name today's callers use)."""
    return verdict_block(
        matches,
        default=default,
        samples=samples,
        seed=seed,
        margin=margin,
        confidence=confidence,
    )


def runs_of(records: Sequence[TrialRecord]) -> dict[str, dict[int, Run]]:
    """Confirmation runs as the block's input: a complete run's matching (read from the
    validation detections kept in its final checkpoint), a failed one's :class:`Failure`."""
    runs: dict[str, dict[int, Run]] = {}
    for run in records:
        spec, s = run.reported_schedule, int(run.config.get("seed", 0))
        if run.state == FAILED:
            reason = "diverged" if run.diverged else (run.error or "failed")
            runs.setdefault(spec, {})[s] = Failure(reason)
            continue
        if run.state != COMPLETE or not run.checkpoint_dir:
            continue
        path = Path(run.checkpoint_dir) / DETECTIONS_FILE
        if not path.is_file():
            raise KdtuneError(
                f"confirmation run {run.trial_id}: no {DETECTIONS_FILE} in {path.parent}"
            )
        runs.setdefault(spec, {})[s] = load_matches(path)
    return runs


def verdict_of_runs(
    runs: list[TrialRecord], default: str, *, samples: int = SAMPLES, seed: int = 0
) -> dict[str, Any]:
    """:func:`verdict_block` of the confirmation runs ``runs`` (:func:`runs_of`)."""
    return confirm_verdict(runs_of(runs), default, samples=samples, seed=seed)

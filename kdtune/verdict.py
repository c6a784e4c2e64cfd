"""How sure a recommendation is: the confirmation stage's ranking and the paired verdict.

- **Ranking.** Each confirmed configuration was trained with the same further seeds; its
  standing is its mean final validation AP over them, with the standard error of that mean.
  The recommendation is the best mean.
- **Paired difference.** The recommendation against another configuration, both trained with
  the same seeds and evaluated on the same images: the per-seed differences, and a paired
  bootstrap over images *and* seeds for a 95 % interval. Each replicate draws the images with
  replacement (an image drawn twice counts twice) and the seeds with replacement; both
  configurations see the same draw, and the replicate's ΔAP is the mean over the drawn seeds.
  AP is recomputed per replicate from each set's matching (:class:`ImageMatches`), exactly as
  COCOeval accumulates it.
- **Verdict.** One sentence: "A beats B by +0.031 AP [+0.012, +0.050] (3 seeds × 512
  images)", or "A is not distinguishable from B: …" when the interval holds 0.

No framework here: plain numbers in, plain records out (stored in ``search.json``, on the
MLflow parent run, and shown by ``kdtune search``, ``compare`` and ``export``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdtune.errors import KdtuneError
from kdtune.evaluate import DETECTIONS_FILE, ImageMatches, load_matches
from kdtune.results import COMPLETE, TrialRecord

SAMPLES = 2000  # bootstrap replicates of a paired difference
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Difference:
    """ΔAP = AP(a) − AP(b): the mean over seeds on all images, its bootstrap interval over
    images and seeds, and each seed's own difference."""

    mean: float
    low: float
    high: float
    per_seed: tuple[float, ...]
    seeds: int
    images: int

    @property
    def sign(self) -> int:
        """+1 when the interval lies above 0, -1 when below, 0 when it holds 0."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


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


def paired_difference(
    a: Mapping[int, ImageMatches],
    b: Mapping[int, ImageMatches],
    *,
    samples: int = SAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Difference:
    """ΔAP of ``a`` over ``b`` (each: training seed → matching on the same images), paired by
    seed and by image; only the seeds both have count."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise KdtuneError("paired difference: the two configurations share no training seed")
    images = a[seeds[0]].image_ids
    for s in seeds:
        if a[s].image_ids != images or b[s].image_ids != images:
            raise KdtuneError(
                f"paired difference: seed {s} was evaluated on other images than seed {seeds[0]}"
            )
    per_seed = [a[s].ap() - b[s].ap() for s in seeds]
    deltas = [
        float(np.mean([a[s].ap(weights) - b[s].ap(weights) for s in drawn]))
        for weights, drawn in _replicates(seeds, len(images), samples, seed)
    ]
    low, high = _interval(deltas, confidence)
    n = len(images)
    return Difference(
        mean=float(np.mean(per_seed)),
        low=float(low),
        high=float(high),
        per_seed=tuple(float(d) for d in per_seed),
        seeds=len(seeds),
        images=n,
    )


def mean_interval(
    runs: Mapping[int, ImageMatches],
    *,
    samples: int = SAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """A bootstrap interval (over images and seeds) of one configuration's mean AP over its
    seeds (``runs``: training seed → matching)."""
    seeds = sorted(runs)
    if not seeds:
        raise KdtuneError("mean interval: no run")
    n = len(runs[seeds[0]].image_ids)
    means = [
        float(np.mean([runs[s].ap(weights) for s in drawn]))
        for weights, drawn in _replicates(seeds, n, samples, seed)
    ]
    return _interval(means, confidence)


def _replicates(
    seeds: list[int], images: int, samples: int, seed: int
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Bootstrap draws: per replicate, each image's count (drawn with replacement) and the
    seeds drawn with replacement."""
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        weights = np.bincount(rng.integers(0, images, images), minlength=images)
        drawn = [seeds[int(i)] for i in rng.integers(0, len(seeds), len(seeds))]
        yield weights, drawn


def _interval(values: Sequence[float], confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(np.asarray(values, dtype=float), [tail, 1.0 - tail])
    return float(low), float(high)


def rank(values: Mapping[str, Mapping[int, float]]) -> list[Standing]:
    """Configurations (schedule spec → seed → final AP) by mean AP, best first."""
    standings = [Standing(spec, dict(v)) for spec, v in values.items() if v]
    return sorted(standings, key=lambda s: -s.mean)


def label(spec: str) -> str:
    """A schedule as a reader names it: ``α = 0.1 (fixed:0.9)``; a schedule's spec as it is."""
    if spec.startswith("fixed:"):
        try:
            alpha = round(1.0 - float(spec.split(":", 1)[1]), 10)
        except ValueError:
            return spec
        return f"α = {alpha:g} ({spec})"
    return spec


def sentence(a: str, b: str, diff: Difference) -> str:
    """The verdict on ``a`` against ``b`` as one sentence."""
    figures = f"{diff.mean:+.3f} AP [{diff.low:+.3f}, {diff.high:+.3f}]"
    size = f"({diff.seeds} seed{'s' if diff.seeds != 1 else ''} × {diff.images} images)"
    if diff.sign > 0:
        return f"{a} beats {b} by {figures} {size}"
    if diff.sign < 0:
        return f"{a} trails {b} by {figures} {size}"
    return f"{a} is not distinguishable from {b}: {figures} {size}"


def confirm_verdict(
    matches: Mapping[str, Mapping[int, ImageMatches]],
    default: str,
    *,
    samples: int = SAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """The confirmation stage's outcome as a plain record: the ranking, the recommendation
    (the best mean), its paired differences against the seed's default ``default``, the
    runner-up and any other confirmed configuration, and the verdict sentence (against the
    default when the recommendation is not the default, else against the runner-up)."""
    values = {spec: {s: m.ap() for s, m in by_seed.items()} for spec, by_seed in matches.items()}
    standings = rank(values)
    if not standings:
        raise KdtuneError("confirmation: no configuration finished a confirmation run")
    best = standings[0]
    default_name = f"the seed default {label(default).split(' (')[0]}"
    runner_up = next((s.schedule for s in standings[1:]), None)
    others = [s.schedule for s in standings[1:]]
    others.sort(key=lambda spec: (spec != default, spec != runner_up))  # default, runner-up, …
    comparisons: list[dict[str, Any]] = []
    for other in others:
        diff = paired_difference(matches[best.schedule], matches[other], samples=samples, seed=seed)
        if other == default:
            role, name = "seed default", default_name
        elif other == runner_up:
            role, name = "runner-up", f"the runner-up {label(other)}"
        else:
            role, name = "other", label(other)
        comparisons.append(
            {
                "against": other,
                "role": role,
                **asdict(diff),
                "per_seed": list(diff.per_seed),  # JSON-native: search.json reads back equal
                "sentence": sentence(_subject(best.schedule, default), name, diff),
            }
        )
    return {
        "recommended": best.schedule,
        "ranking": [
            {
                "schedule": s.schedule,
                "mean": s.mean,
                "se": s.se,
                "values": {str(seed): v for seed, v in sorted(s.values.items())},
            }
            for s in standings
        ],
        "comparisons": comparisons,
        "sentence": comparisons[0]["sentence"] if comparisons else _alone(best),
    }


def verdict_of_runs(
    runs: list[TrialRecord], default: str, *, samples: int = SAMPLES, seed: int = 0
) -> dict[str, Any]:
    """:func:`confirm_verdict` of the complete confirmation runs ``runs``, read from the
    validation detections each kept in its final checkpoint."""
    matches: dict[str, dict[int, ImageMatches]] = {}
    for run in runs:
        if run.state != COMPLETE or not run.checkpoint_dir:
            continue
        path = Path(run.checkpoint_dir) / DETECTIONS_FILE
        if not path.is_file():
            raise KdtuneError(
                f"confirmation run {run.trial_id}: no {DETECTIONS_FILE} in {path.parent}"
            )
        spec = run.reported_schedule
        matches.setdefault(spec, {})[int(run.config.get("seed", 0))] = load_matches(path)
    return confirm_verdict(matches, default, samples=samples, seed=seed)


def _subject(spec: str, default: str) -> str:
    return f"the seed default {label(spec).split(' (')[0]}" if spec == default else label(spec)


def _alone(best: Standing) -> str:
    return (
        f"{label(best.schedule)} was the only configuration confirmed: mean AP "
        f"{best.mean:.3f} ± {best.se:.3f} over {len(best.values)} seeds; nothing to compare"
    )

"""Paired differences of COCO keypoint AP: one configuration against another, both trained with
the same seeds and evaluated on the same images (the verdict block's comparisons, and
``kdtune export``'s held-out check), and one mean's interval over seeds and images.

The image part comes from an exact bootstrap over images (:func:`kdtune.evaluate.ap_replicates`),
the seed part from the spread of the per-seed differences at R − 1 degrees of freedom;
:mod:`kdtune.inference` combines them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from kdtune.errors import KdtuneError
from kdtune.evaluate import ImageMatches, ap_replicates, image_draws
from kdtune.inference import PairedEstimate, paired_estimate

SAMPLES = 2000  # bootstrap replicates over images
CONFIDENCE = 0.95  # of each interval


@dataclass(frozen=True)
class Difference:
    """ΔAP = AP(a) − AP(b): the mean over seeds on all images, its interval (seed part at
    R − 1 degrees of freedom plus the image bootstrap; images only with one seed), and each
    seed's own difference."""

    mean: float
    low: float
    high: float
    per_seed: tuple[float, ...]
    seeds: int
    images: int
    se: float = 0.0
    df: float = 0.0

    @property
    def sign(self) -> int:
        """+1 when the interval lies above 0, -1 when below, 0 when it holds 0."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def check_images(runs: Iterable[tuple[str, ImageMatches]]) -> tuple[int, ...]:
    images: tuple[int, ...] | None = None
    first = ""
    for name, m in runs:
        if images is None:
            images, first = m.image_ids, name
        elif m.image_ids != images:
            raise KdtuneError(f"verdict: {name} was evaluated on other images than {first}")
    if images is None:
        raise KdtuneError("verdict: no finished run")
    return images


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
    images = check_images(
        [(f"seed {s}", a[s]) for s in seeds] + [(f"seed {s}", b[s]) for s in seeds]
    )
    draws = image_draws(len(images), samples, seed)
    per_seed = [a[s].ap() - b[s].ap() for s in seeds]
    reps = np.stack([ap_replicates(a[s], draws) - ap_replicates(b[s], draws) for s in seeds], 1)
    est = paired_estimate(per_seed, reps, len(images))
    return difference_of(est, per_seed, confidence)


def difference_of(est: PairedEstimate, per_seed: Sequence[float], confidence: float) -> Difference:
    low, high = est.interval(confidence)
    return Difference(
        mean=est.mean,
        low=low,
        high=high,
        per_seed=tuple(float(d) for d in per_seed),
        seeds=est.seeds,
        images=est.images,
        se=est.se,
        df=est.df((1.0 - confidence) / 2.0),
    )


def mean_interval(
    runs: Mapping[int, ImageMatches],
    *,
    samples: int = SAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """An interval of one configuration's mean AP over its seeds (``runs``: training seed →
    matching): the seeds' spread at R − 1 degrees of freedom plus the image bootstrap."""
    seeds = sorted(runs)
    if not seeds:
        raise KdtuneError("mean interval: no run")
    images = check_images((f"seed {s}", runs[s]) for s in seeds)
    draws = image_draws(len(images), samples, seed)
    reps = np.stack([ap_replicates(runs[s], draws) for s in seeds], axis=1)
    return paired_estimate([runs[s].ap() for s in seeds], reps, len(images)).interval(confidence)


def sentence(a: str, b: str, diff: Difference) -> str:
    """The verdict on ``a`` against ``b`` (one pair alone, no family) as one sentence."""
    figures = f"{diff.mean:+.3f} AP [{diff.low:+.3f}, {diff.high:+.3f}]"
    size = f"({diff.seeds} seed{'s' if diff.seeds != 1 else ''} × {diff.images} images)"
    if diff.seeds < 2:
        return f"{a} against {b}: {figures} on these images only; one seed, no claim {size}"
    if diff.sign > 0:
        return f"{a} beats {b} by {figures} {size}"
    if diff.sign < 0:
        return f"{a} trails {b} by {figures} {size}"
    return f"{a} is not distinguishable from {b}: {figures} {size}"

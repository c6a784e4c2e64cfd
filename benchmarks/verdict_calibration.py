"""Calibration of kdtune's verdict: simulated confirmations with planted seed and image noise.

Each simulated configuration, trained with seed s, is scored on N images as real
:class:`kdtune.evaluate.ImageMatches` (per-detection true/false positives at COCO's ten OKS
thresholds, persons per image), so the verdict's exact AP bootstrap runs unchanged. A person's
keypoint quality (a logit) is

    z = μ_config + u[config, seed] + e[config, image] + h[image] + ε[config, seed, person]

with ``u`` the seed noise (sd ``seed_sd``), ``e`` the configuration-by-image noise (sd
``image_sd``), ``h`` a shared image difficulty and ``ε`` the seed-by-image noise (sd
``run_sd``). Its detection is a true positive at OKS threshold t when sigmoid(z) ≥ t; its
score follows z with noise; each image adds a few low-scored false positives. A fresh set of
images is drawn for every replicate (the images are a sample, as a validation split is).

Measured:

- **coverage** of the 95 % paired interval of one pair (the truth: 0 under the null by
  symmetry; under an effect, the mean of the per-seed difference over ``truth_draws``
  independent draws of seeds and images);
- **family-wise false claims** of the whole block with three candidates under a global null
  (any "beats" or "trails"; "equivalent" is true there);
- the same coverage for the former method (a percentile bootstrap over images and seeds).

Run: ``PYTHONPATH=. python benchmarks/verdict_calibration.py --replicates 300 --old --familywise``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from kdtune.evaluate import ImageMatches, ap_replicates, image_draws
from kdtune.paired import paired_difference
from kdtune.verdict import verdict_block

THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's OKS thresholds
TRUTH_DRAWS = 40_000  # se of the effect scenario's truth: about 0.0003 AP


@dataclass(frozen=True)
class Scenario:
    """Planted noise (logit units) and the effect of configuration "a" over the others."""

    name: str
    effect: float = 0.0
    seed_sd: float = 0.15
    image_sd: float = 0.3
    run_sd: float = 0.5
    images: int = 60


@dataclass
class World:
    """One replicate's images: persons per image, difficulty, per-configuration image noise."""

    persons: np.ndarray  # [N] ints
    difficulty: np.ndarray  # [N]
    config_image: dict[str, np.ndarray]  # config → [N]
    false_positives: np.ndarray  # [N] ints


def draw_world(sc: Scenario, configs: Sequence[str], rng: np.random.Generator) -> World:
    n = sc.images
    return World(
        persons=rng.integers(1, 4, n),
        difficulty=rng.normal(0.8, 1.0, n),
        config_image={c: rng.normal(0.0, sc.image_sd, n) for c in configs},
        false_positives=rng.poisson(0.7, n),
    )


def matches(
    world: World, config: str, mu: float, sc: Scenario, rng: np.random.Generator
) -> ImageMatches:
    """One training seed of ``config`` on ``world``'s images, as COCOeval would match it."""
    n = len(world.persons)
    image_of_person = np.repeat(np.arange(n), world.persons)
    z = (
        mu
        + rng.normal(0.0, sc.seed_sd)
        + world.config_image[config][image_of_person]
        + world.difficulty[image_of_person]
        + rng.normal(0.0, sc.run_sd, len(image_of_person))
    )
    oks = 1.0 / (1.0 + np.exp(-z))
    score = z + rng.normal(0.0, 0.5, len(z))
    fp_image = np.repeat(np.arange(n), world.false_positives)
    fp_score = rng.normal(-1.5, 0.7, len(fp_image))
    image_of = np.concatenate([image_of_person, fp_image])
    scores = np.concatenate([score, fp_score])
    hit = np.concatenate(
        [oks[None, :] >= THRESHOLDS[:, None], np.zeros((len(THRESHOLDS), len(fp_image)), bool)],
        axis=1,
    )
    order = np.argsort(-scores, kind="mergesort")
    return ImageMatches(
        tuple(range(n)),
        image_of[order],
        hit[:, order],
        ~hit[:, order],
        world.persons.astype(float),
    )


def simulate(
    sc: Scenario,
    configs: dict[str, float],
    seeds: int,
    rng: np.random.Generator,
) -> dict[str, dict[int, ImageMatches]]:
    world = draw_world(sc, list(configs), rng)
    return {
        c: {s: matches(world, c, mu, sc, rng) for s in range(seeds)} for c, mu in configs.items()
    }


@lru_cache(maxsize=16)
def truth(sc: Scenario, draws: int, seed: int) -> float:
    """The expected paired difference AP(a) − AP(b) of one seed on N images (the quantity
    the interval estimates), by ``draws`` independent draws. Its own error must be small
    against the intervals it judges: with 4000 draws the effect scenario's truth came out
    0.0423 against 0.0412 ± 0.0004 from 30,000, enough to move the coverage at R = 2 by
    about a point."""
    rng = np.random.default_rng(seed)
    if sc.effect == 0.0:
        return 0.0  # a and b are exchangeable
    values = []
    for _ in range(draws):
        runs = simulate(sc, {"a": sc.effect, "b": 0.0}, 1, rng)
        values.append(runs["a"][0].ap() - runs["b"][0].ap())
    return float(np.mean(values))


def old_interval(
    a: dict[int, ImageMatches], b: dict[int, ImageMatches], samples: int, seed: int
) -> tuple[float, float]:
    """The former interval: a percentile bootstrap drawing images and seeds with replacement."""
    seeds = sorted(a)
    n = len(a[seeds[0]].image_ids)
    draws = image_draws(n, samples, seed)
    diffs = {s: ap_replicates(a[s], draws) - ap_replicates(b[s], draws) for s in seeds}
    rng = np.random.default_rng(seed + 1)
    picks = rng.integers(0, len(seeds), (samples, len(seeds)))
    values = np.array([np.mean([diffs[seeds[j]][i] for j in picks[i]]) for i in range(samples)])
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)


@dataclass
class Rates:
    replicates: int
    covered: int
    old_covered: int
    familywise: int  # replicates with any false "beats"/"trails" (global null, 3 candidates)
    seconds: float

    @property
    def coverage(self) -> float:
        return self.covered / self.replicates

    @property
    def old_coverage(self) -> float:
        return self.old_covered / self.replicates

    @property
    def familywise_rate(self) -> float:
        return self.familywise / self.replicates


def coverage(
    sc: Scenario,
    seeds: int,
    replicates: int,
    *,
    samples: int = 200,
    seed: int = 0,
    true_value: float | None = None,
    old: bool = False,
) -> Rates:
    """How often the paired interval of a against b holds the truth."""
    rng = np.random.default_rng(seed)
    target = truth(sc, TRUTH_DRAWS, seed + 10_000) if true_value is None else true_value
    start = time.perf_counter()
    covered = old_covered = 0
    for r in range(replicates):
        runs = simulate(sc, {"a": sc.effect, "b": 0.0}, seeds, rng)
        diff = paired_difference(runs["a"], runs["b"], samples=samples, seed=r)
        covered += diff.low <= target <= diff.high
        if old:
            low, high = old_interval(runs["a"], runs["b"], samples, r)
            old_covered += low <= target <= high
    return Rates(replicates, covered, old_covered, 0, time.perf_counter() - start)


def familywise(
    sc: Scenario, seeds: int, replicates: int, *, samples: int = 200, seed: int = 0
) -> Rates:
    """How often the block of three equal candidates claims any "beats" or "trails"."""
    rng = np.random.default_rng(seed)
    configs = {"fixed:0": 0.0, "fixed:0.5": 0.0, "fixed:0.75": 0.0}
    start = time.perf_counter()
    false = 0
    for r in range(replicates):
        runs = simulate(sc, configs, seeds, rng)
        block = verdict_block(runs, default="fixed:0.75", samples=samples, seed=r)
        false += any(c["outcome"] in ("beats", "trails") for c in block["comparisons"])
    return Rates(replicates, 0, 0, false, time.perf_counter() - start)


SCENARIOS = (
    Scenario("null, seed noise dominant", seed_sd=0.3, image_sd=0.1, run_sd=0.3),
    Scenario("null, image noise dominant", seed_sd=0.05, image_sd=0.5, run_sd=0.3),
    Scenario("effect +0.15 logit, mixed noise", effect=0.15),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=100, help="image bootstrap replicates")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument(
        "--scenarios", type=int, nargs="*", default=[0, 1, 2], help="indices into SCENARIOS"
    )
    parser.add_argument("--familywise", action="store_true", help="also the 3-candidate null")
    parser.add_argument("--old", action="store_true", help="also the former bootstrap")
    args = parser.parse_args()
    print(f"{args.replicates} replicates, {args.samples} image-bootstrap samples each", flush=True)
    for i in args.scenarios:
        sc = SCENARIOS[i]
        for r in args.seeds:
            rates = coverage(sc, r, args.replicates, samples=args.samples, old=args.old)
            old = f", former method {rates.old_coverage:.3f}" if args.old else ""
            print(
                f"coverage  {sc.name:32s} R={r}: {rates.coverage:.3f}{old} ({rates.seconds:.0f} s)",
                flush=True,
            )
    if args.familywise:
        for r in args.seeds:
            rates = familywise(SCENARIOS[2], r, args.replicates, samples=args.samples)
            print(
                f"family-wise false claims, 3 equal candidates, R={r}: "
                f"{rates.familywise_rate:.3f} ({rates.seconds:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Calibration of the verdict's intervals and claims, by simulation with known answers.

Fast (default suite): the arithmetic the block uses (:func:`kdtune.inference.paired_estimate`
on per-seed differences and their image-bootstrap replicates) on a linear model of per-image
scores with planted seed noise, seed-by-image noise and configuration-by-image noise: the 95 %
interval covers the planted difference 93–97 % of the time at R = 2, 3 and 5 seeds. With
1000 replicates, a true 95 % falls outside 93–97 % with probability 0.4 % (binomial, ±2.9
standard errors); each run is seeded, so the outcome is fixed.

Slow: the whole block on simulated per-image matches (:class:`kdtune.evaluate.ImageMatches`,
AP recomputed exactly per bootstrap replicate; ``benchmarks/verdict_calibration.py``):
coverage at R = 2, 3, 5 and family-wise false claims with three equal candidates.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdtune.evaluate import image_draws
from kdtune.inference import paired_estimate

REPLICATES = 1000


def _linear_coverage(
    seeds: int, *, seed_sd: float, run_sd: float, image_sd: float, effect: float, seed: int
) -> float:
    """How often the interval of a linear statistic (mean per-image score) holds ``effect``."""
    rng = np.random.default_rng(seed)
    images = 100
    draws = image_draws(images, 200, seed)  # the images are new each replicate
    covered = 0
    for _ in range(REPLICATES):
        image_part = rng.normal(0.0, image_sd, images)  # config-by-image, shared by the seeds
        diff = (
            effect
            + image_part[None, :]
            + rng.normal(0.0, seed_sd, (seeds, 1))
            + rng.normal(0.0, run_sd, (seeds, images))
        )  # [seeds, images]: configuration a minus b, per seed and image
        per_seed = diff.mean(axis=1)
        reps = draws @ diff.T / images  # [B, seeds]
        low, high = paired_estimate(per_seed, reps, images).interval(0.95)
        covered += low <= effect <= high
    return covered / REPLICATES


MIXES = {  # sd of a per-seed global shift, of seed-by-image noise, of config-by-image noise
    "seeds dominate": {"seed_sd": 0.05, "run_sd": 0.1, "image_sd": 0.05},
    "balanced": {"seed_sd": 0.01, "run_sd": 0.1, "image_sd": 0.1},
    "images dominate": {"seed_sd": 0.002, "run_sd": 0.05, "image_sd": 0.2},
}


@pytest.mark.parametrize("seeds", [2, 3, 5])
@pytest.mark.parametrize("mix", list(MIXES))
def test_the_paired_interval_covers_at_its_nominal_rate(seeds: int, mix: str) -> None:
    rate = _linear_coverage(seeds, effect=0.02, seed=seeds, **MIXES[mix])
    assert 0.93 <= rate <= 0.97, f"{mix}, {seeds} seeds: coverage {rate:.3f}"


def _simulator() -> Any:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "verdict_calibration.py"
    spec = importlib.util.spec_from_file_location("verdict_calibration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("verdict_calibration", module)
    spec.loader.exec_module(module)
    return module


# A true 95 % falls outside 93–97 % with probability 0.4 % at 1000 replicates (±2.9 se); at
# the 300 this test once drew, 11 % (±1.6 se), and a cell measured 0.893 that 4000 replicates
# and a precise truth put at 0.936 (docs/statistics.md).
SLOW_REPLICATES = 1000


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [2, 3, 5])
@pytest.mark.parametrize("scenario", [0, 1, 2])
def test_coverage_on_simulated_image_matches(seeds: int, scenario: int) -> None:
    sim = _simulator()
    rates = sim.coverage(sim.SCENARIOS[scenario], seeds, SLOW_REPLICATES, samples=100)
    assert 0.93 <= rates.coverage <= 0.97, f"{sim.SCENARIOS[scenario].name}: {rates}"


FAMILY_REPLICATES = 300  # each replicate is a whole block of three candidates


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_familywise_false_claims_with_three_equal_candidates(seeds: int) -> None:
    """Under a global null with three candidates, any "beats"/"trails" in the block is false;
    at most 5 % of blocks may hold one."""
    sim = _simulator()
    rates = sim.familywise(sim.SCENARIOS[2], seeds, FAMILY_REPLICATES, samples=100)
    assert rates.familywise_rate <= 0.05, rates

"""The pooled model's maths: its terms (golden values), exact recovery of a noise-free surface,
its standard errors equal to the seed-demeaned regression's (Frisch–Waugh–Lovell), seed shifts
that drop out, and the designs it refuses to fit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdtune.pooled import Run, differs_beyond, features, fit

FIXED = ("fixed:0", "fixed:0.5", "fixed:0.75", "fixed:0.9", "fixed:1")
SPECS = (*FIXED, "linear:0.9:0.5", "linear:0.5:0.9", "cosine:1:0.4")  # 3 adaptive: direction fitted


def _surface(spec: str) -> float:
    """A known AP gain over α = 1: best β̄ (0.8) inside the range."""
    mean, square = features(spec)
    return 0.04 * mean - 0.025 * square


def test_the_terms_of_a_weighting() -> None:
    assert features("fixed:0") == (0.0, 0.0)
    assert features("fixed:0.75") == (0.75, 0.5625)
    mean, square = features("linear:0.9:0.5")
    assert mean == pytest.approx(0.7, abs=1e-12) and square == pytest.approx(0.49, abs=1e-12)
    # a cosine between the same ends has the same mean (it is symmetric about its middle), and
    # which way a schedule moves is not a term
    assert features("cosine:0.5:0.9")[0] == pytest.approx(0.7, abs=1e-9)
    assert features("linear:0.5:0.9") == pytest.approx(features("linear:0.9:0.5"), abs=1e-12)


def test_a_noise_free_surface_is_recovered_exactly_whatever_the_seed_shifts() -> None:
    shift = {100: 0.01, 101: 0.03, 102: -0.02}
    runs = [Run(s, seed, 0.02 + off + _surface(s)) for seed, off in shift.items() for s in SPECS]
    model = fit(runs)
    assert model is not None
    for spec in (*SPECS, "cosine:0.3:1", "fixed:0.2"):
        assert model.gain(spec) == pytest.approx(_surface(spec), abs=1e-12)
    assert model.residual_sd == pytest.approx(0.0, abs=1e-12)
    assert model.best(SPECS) == max(SPECS, key=_surface) == "fixed:0.75"
    assert (model.runs, model.seeds, model.weightings) == (24, 3, 8)
    assert model.dof == 24 - (2 + 3)
    assert model.model == "AP ~ β̄ + β̄² + seed"


def test_standard_errors_equal_the_seed_demeaned_regression() -> None:
    """Frisch–Waugh–Lovell: the weighting coefficients and their covariance are those of the
    regression of seed-demeaned AP on seed-demeaned terms, at the full model's residual dof."""
    rng = np.random.default_rng(3)
    runs = [
        Run(s, seed, 0.02 + 0.01 * seed + _surface(s) + rng.normal(0, 0.004))
        for seed in range(4)
        for s in SPECS
    ]
    model = fit(runs)
    assert model is not None
    x = np.array([features(r.schedule) for r in runs])
    y = np.array([r.ap for r in runs])
    seeds = np.array([r.seed for r in runs])
    for s in set(seeds.tolist()):
        x[seeds == s] -= x[seeds == s].mean(axis=0)
        y[seeds == s] -= y[seeds == s].mean()
    coef = np.linalg.solve(x.T @ x, x.T @ y)
    dof = len(runs) - 2 - 4
    sigma2 = float(np.sum((y - x @ coef) ** 2)) / dof
    cov = sigma2 * np.linalg.inv(x.T @ x)
    assert model.coef == pytest.approx(coef, abs=1e-12)
    assert model.cov == pytest.approx(cov, rel=1e-9, abs=1e-15)
    assert model.dof == dof
    d = np.asarray(features("fixed:1")) - np.asarray(features("fixed:0.75"))
    mean, se = model.difference("fixed:1", "fixed:0.75")
    assert mean == pytest.approx(float(d @ coef), abs=1e-12)
    assert se == pytest.approx(float(np.sqrt(d @ cov @ d)), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    shifts=st.lists(st.floats(-0.05, 0.05), min_size=3, max_size=3),
    noise_seed=st.integers(0, 2**31 - 1),
)
def test_a_shift_shared_by_every_run_of_a_seed_changes_no_prediction(
    shifts: list[float], noise_seed: int
) -> None:
    rng = np.random.default_rng(noise_seed)
    base = [Run(s, seed, _surface(s) + rng.normal(0, 0.005)) for seed in range(3) for s in SPECS]
    moved = [Run(r.schedule, r.seed, r.ap + shifts[r.seed]) for r in base]
    a, b = fit(base), fit(moved)
    assert a is not None and b is not None
    for spec in SPECS:
        assert b.gain(spec) == pytest.approx(a.gain(spec), abs=1e-9)
        assert b.gain_se(spec) == pytest.approx(a.gain_se(spec), rel=1e-6, abs=1e-12)


def test_a_lucky_rising_schedule_does_not_make_rising_schedules_favoured() -> None:
    """Direction is not a term: one high single-seed run of a rising schedule moves the
    prediction of every weighting of its β̄ alike, rising or falling."""
    runs = [Run(s, seed, 0.01 * seed + _surface(s)) for seed in range(3) for s in SPECS]
    lucky = Run("linear:0.5:0.9", 0, runs[6].ap + 0.05)
    model = fit([*runs, lucky])
    assert model is not None
    assert model.gain("linear:0.5:0.9") == pytest.approx(model.gain("linear:0.9:0.5"))


@pytest.mark.parametrize(
    "runs",
    [
        [],
        # fewer runs than parameters plus two (3 parameters with one seed: 5 needed)
        [Run(s, 0, 0.01) for s in SPECS[:4]],
        # two weightings only
        [Run(s, seed, 0.01) for seed in range(4) for s in ("fixed:0", "fixed:1")],
        # three weightings with one mean β: how AP depends on β̄ is not identified
        [
            Run(s, seed, 0.01)
            for seed in range(3)
            for s in ("fixed:0.7", "linear:0.9:0.5", "linear:0.5:0.9")
        ],
        # every run its own seed: nothing is paired
        [Run(s, i, 0.01) for i, s in enumerate(SPECS * 2)],
    ],
)
def test_designs_that_cannot_say_how_ap_depends_on_beta_give_no_model(runs: list[Run]) -> None:
    assert fit(runs) is None


def test_non_finite_values_are_left_out() -> None:
    runs = [Run(s, 0, _surface(s)) for s in SPECS]
    model = fit([*runs, Run("fixed:0.2", 0, float("nan"))])
    assert model is not None and model.runs == len(SPECS)


def test_a_weighting_trained_twice_on_one_seed_counts_once() -> None:
    rng = np.random.default_rng(1)
    runs = [Run(s, seed, _surface(s) + rng.normal(0, 0.003)) for seed in range(2) for s in SPECS]
    once, twice = fit(runs), fit([*runs, runs[3], runs[4]])
    assert once is not None and twice is not None
    assert twice.runs == once.runs == 2 * len(SPECS) and twice.dof == once.dof
    assert twice.residual_sd == pytest.approx(once.residual_sd, rel=1e-12)


def test_settings_other_than_weighting_and_seed_are_named() -> None:
    a = {"schedule": "fixed:0.5", "seed": 1, "lr": 0.004, "epochs": 12, "eval_every": 2}
    b = {**a, "schedule": "fixed:1", "seed": 2, "eval_every": 12, "round": 1}
    assert differs_beyond([a, b]) == []
    assert differs_beyond([a, {**b, "lr": 0.002}, {**a, "batch_size": 32}]) == [
        "batch_size",
        "lr",
    ]


# --- lack of fit --------------------------------------------------------------------------------


def _grid(curve: dict[str, float], seeds: int, sd: float, rng_seed: int = 0) -> list[Run]:
    """Each weighting of ``curve`` on ``seeds`` seeds: its value, a seed shift, noise of ``sd``."""
    rng = np.random.default_rng(rng_seed)
    shift = rng.normal(0, 0.05, seeds)
    return [
        Run(spec, s, value + shift[s] + rng.normal(0, sd))
        for spec, value in curve.items()
        for s in range(seeds)
    ]


def test_runs_on_the_quadratic_pass_the_lack_of_fit_test() -> None:
    curve = {f"fixed:{b}": 0.02 * b - 0.01 * b * b for b in (0, 0.25, 0.5, 0.75, 0.9, 1)}
    model = fit(_grid(curve, 8, sd=0.002))
    assert model is not None and model.lack_of_fit is not None
    assert model.lack_of_fit > 0.05 and model.fits


def test_a_plateau_the_quadratic_cannot_follow_fails_it() -> None:
    # flat up to β̄ 0.5, then a step of 0.02: far from any quadratic at this noise
    curve = {f"fixed:{b}": 0.02 * (b > 0.5) for b in (0, 0.25, 0.5, 0.6, 0.75, 0.9, 1)}
    model = fit(_grid(curve, 8, sd=0.002))
    assert model is not None and model.lack_of_fit is not None
    assert model.lack_of_fit < 1e-6 and not model.fits
    assert model.record(["fixed:1"])["lack_of_fit"] == model.lack_of_fit


def test_the_lack_of_fit_is_the_f_test_against_one_mean_per_weighting() -> None:
    runs = _grid({f"fixed:{b}": 0.01 * b for b in (0, 0.3, 0.6, 1)}, 5, sd=0.01, rng_seed=3)
    model = fit(runs)
    assert model is not None
    # the same F by hand: weighting means and seed effects (a two-way additive fit)
    weightings, seeds = sorted({r.schedule for r in runs}), sorted({r.seed for r in runs})
    x = np.zeros((len(runs), len(weightings) + len(seeds)))
    for i, r in enumerate(runs):
        x[i, weightings.index(r.schedule)] = 1
        x[i, len(weightings) + seeds.index(r.seed)] = 1
    y = np.array([r.ap for r in runs])
    free = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
    dof_free = len(runs) - (len(weightings) + len(seeds) - 1)
    rss_model = model.residual_sd**2 * model.dof
    f = ((rss_model - free @ free) / (model.dof - dof_free)) / (free @ free / dof_free)
    from kdtune.inference import f_sf

    assert model.lack_of_fit == pytest.approx(f_sf(f, model.dof - dof_free, dof_free), rel=1e-9)


def test_no_lack_of_fit_test_without_replicated_weightings_or_spare_weightings() -> None:
    one_seed = [Run(f"fixed:{b}", 0, 0.01 * b) for b in (0, 0.2, 0.4, 0.6, 0.8, 1)]
    three = _grid({"fixed:0": 0.0, "fixed:0.5": 0.01, "fixed:1": 0.012}, 4, sd=0.003)
    for runs in (one_seed, three):
        model = fit(runs)
        assert model is not None and model.lack_of_fit is None and model.fits

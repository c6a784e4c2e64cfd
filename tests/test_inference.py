"""The verdict's arithmetic against golden values: Student's t and chi-squared quantiles
(closed forms and table values), the seed-by-image variance split on a case computed by hand,
Holm's step-down, TOST, the seeds still needed, and one-line refusals of bad levels."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdtune.errors import KdtuneError
from kdtune.inference import (
    PairedEstimate,
    beta_inc,
    check_level,
    chi2_quantile,
    holm,
    holm_tests,
    normal_quantile,
    paired_estimate,
    satterthwaite,
    seed_bound,
    seeds_needed,
    t_cdf,
    t_quantile,
)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.99995])
def test_t_quantiles_with_one_and_two_degrees_of_freedom_have_closed_forms(p: float) -> None:
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-11)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-11)


@pytest.mark.parametrize(
    ("p", "df", "value"),
    [  # t and normal tables (to 17 digits by mpmath at 30 digits)
        (0.975, 4, 2.7764451051977944),
        (0.975, 10, 2.2281388519862747),
        (0.95, 3, 2.3533634348018239),
        (0.975, math.inf, 1.959963984540054),
        (0.8, math.inf, 0.8416212335729143),
    ],
)
def test_t_quantiles_match_the_tables(p: float, df: float, value: float) -> None:
    assert t_quantile(p, df) == pytest.approx(value, rel=1e-11)
    assert t_quantile(1 - p, df) == pytest.approx(-value, rel=1e-11)
    assert t_cdf(value, df) == pytest.approx(p, abs=1e-13)


def test_the_normal_quantile_and_the_cauchy_distribution() -> None:
    assert normal_quantile(0.975) == pytest.approx(1.959963984540054, rel=1e-12)
    for x in (-30.0, -1.0, 1e-6, 0.5, 4.0):
        assert t_cdf(x, 1) == pytest.approx(0.5 + math.atan(x) / math.pi, abs=1e-14)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.95])
def test_chi_squared_quantiles(p: float) -> None:
    assert chi2_quantile(p, 2) == pytest.approx(-2 * math.log(1 - p), rel=1e-11)  # exponential
    # one degree of freedom: the square of a normal quantile
    assert chi2_quantile(p, 1) == pytest.approx(normal_quantile(0.5 + p / 2) ** 2, rel=1e-9)


def test_incomplete_beta_closed_forms() -> None:
    for x in (0.01, 0.3, 0.7, 0.99):
        assert beta_inc(3.0, 1.0, x) == pytest.approx(x**3, rel=1e-13)
        assert beta_inc(0.5, 0.5, x) == pytest.approx(
            2 / math.pi * math.asin(math.sqrt(x)), rel=1e-12
        )


@given(x=st.floats(-50, 50), df=st.floats(0.5, 5000))
def test_the_quantile_inverts_the_distribution(x: float, df: float) -> None:
    p = t_cdf(x, df)
    if 1e-12 < p < 1 - 1e-12:
        assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-12)
    assert t_cdf(-x, df) == pytest.approx(1 - p, abs=1e-13)


def test_satterthwaite_by_hand() -> None:
    assert satterthwaite([(1.0, 2.0), (1.0, 10.0)]) == pytest.approx(4 / 0.6)
    assert satterthwaite([(2.0, 3.0), (0.0, 100.0)]) == pytest.approx(3.0)


def test_the_variance_split_by_hand() -> None:
    """Two seeds (differences 0.01 and 0.03), four image replicates: row means
    (0, 0.01, 0.02, 0.03) have variance 1.667e-4; the seeds' own replicate variances
    1.333e-4 and 2.667e-4 average 2e-4; the interaction (2e-4 − 1.667e-4)/1 leaves the images'
    part 1.333e-4; the seed part is var(0.01, 0.03)/2 = 1e-4."""
    reps = np.array([[0.0, 0.0], [0.0, 0.02], [0.02, 0.02], [0.02, 0.04]])
    est = paired_estimate([0.01, 0.03], reps, images=100)
    assert est.mean == pytest.approx(0.02)
    assert est.seed_var == pytest.approx(1e-4)
    assert est.image_var == pytest.approx(4e-4 / 3)
    assert est.seed_sd == pytest.approx(math.sqrt(2e-4))
    # df: the seed part at its 70 % upper bound 1e-4 / χ²(0.3, 1) weighs against 99 image df
    bound = 1e-4 / 0.14847186183254513
    assert est.df() == pytest.approx(
        (bound + 4e-4 / 3) ** 2 / (bound**2 + (4e-4 / 3) ** 2 / 99), rel=1e-9
    )
    assert est.df() == pytest.approx(1.4345462442914818, rel=1e-9)
    low, high = est.interval(0.95)
    half = t_quantile(0.975, est.df()) * math.sqrt(1e-4 + 4e-4 / 3)
    assert (low, high) == pytest.approx((0.02 - half, 0.02 + half))
    # one seed: nothing measures the seeds; the whole replicate variance is the images'
    one = paired_estimate([0.01], reps[:, :1], images=100)
    assert not one.seeds_measured and one.seed_var == 0.0
    assert one.image_var == pytest.approx(4e-4 / 3) and one.df() == 99


def test_tost_and_the_difference_test_by_hand() -> None:
    est = PairedEstimate(mean=0.001, seed_var=1e-6, image_var=0.0, seeds=3, images=500)
    se = 1e-3
    assert est.df() == pytest.approx(2.0)  # the seed part alone
    assert est.p_differs() == pytest.approx(2 * (1 - t_cdf(1.0, 2.0)))  # 0.4226
    assert est.p_differs() == pytest.approx(0.42264973081037427, rel=1e-10)
    # TOST at ±0.005: the nearer bound (+0.005) is 4 se away
    assert est.p_equivalent(0.005) == pytest.approx(t_cdf((0.001 - 0.005) / se, 2.0))
    assert est.p_equivalent(0.005) == pytest.approx(0.028595479208968266, rel=1e-9)
    exact = PairedEstimate(0.0, 0.0, 0.0, 3, 10)
    assert exact.p_differs() == 1.0 and exact.p_equivalent(0.005) == 0.0


def test_smaller_tails_weigh_the_seed_part_at_a_higher_bound() -> None:
    assert seed_bound(0.025) == 0.3 and seed_bound(0.05 / 6) == pytest.approx(0.1)
    est = PairedEstimate(0.02, 1e-4, 1e-4, 2, 100)
    dfs = [est.df(t) for t in (0.025, 0.01, 0.001)]
    assert dfs == sorted(dfs, reverse=True) and dfs[-1] > 1.0
    # the 70 % bound of one seed degree of freedom: 1e-4 / χ²(0.3; 1)
    bound = 1e-4 / 0.14847186183254513
    assert dfs[0] == pytest.approx((bound + 1e-4) ** 2 / (bound**2 + 1e-8 / 99))


def test_holm_with_level_dependent_tests() -> None:
    """Three hypotheses, p 0.001, 0.02, 0.3 at 5 %: the first is tested at 0.05/3, the
    second at 0.05/2, the third at 0.05 and stands."""
    seen: list[float] = []

    def test(p: float) -> Callable[[float], bool]:
        return lambda level: seen.append(level) or p <= level

    held = holm_tests([0.02, 0.001, 0.3], [test(0.02), test(0.001), test(0.3)], 0.05)
    assert held == [pytest.approx(0.025), pytest.approx(0.05 / 3), None]
    assert seen == pytest.approx([0.05 / 3, 0.025, 0.05])
    # capped at two true hypotheses at once: the first step is at 0.05/2
    assert holm_tests([0.02, 0.03, 0.04], [test(0.02)] * 3, 0.05, cap=2) == [
        pytest.approx(0.025),
        pytest.approx(0.025),
        pytest.approx(0.05),
    ]
    assert holm_tests([0.04], [test(0.04)], 0.01) == [None]


def test_holm_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # at most two hypotheses true at once: no multiplier above 2
    assert holm(p, cap=2) == pytest.approx([0.02, 0.06, 0.06, 0.01])
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # at most 1
    assert holm([0.02, 0.01, 0.5]) == pytest.approx([0.04, 0.03, 0.5])  # monotone
    assert holm([]) == []


def test_seeds_needed_by_hand() -> None:
    """Mean +0.002, one seed's sd 0.003, images' se 0.0005, margin 0.005, level 0.05/3: the
    equivalence claim needs (0.003 / (z(0.98333) + z(0.8)))² − 0.0005² ≥ 0.003² / R, R = 12;
    the difference claim would need 68."""
    est = PairedEstimate(0.002, 0.003**2 / 3, 0.0005**2, 3, 4096)
    assert seeds_needed(est, 0.005, 0.05 / 3) == 12
    assert seeds_needed(est, 0.005, 0.05 / 3, most=10) is None
    wide = PairedEstimate(0.002, 0.003**2 / 3, 0.01**2, 3, 64)  # the images decide
    assert seeds_needed(wide, 0.005, 0.05 / 3) is None
    assert seeds_needed(PairedEstimate(0.002, 0.0, 1e-8, 1, 64), 0.005, 0.05) is None


@given(margin=st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf)))
def test_a_margin_that_is_not_positive_is_refused(margin: float) -> None:
    with pytest.raises(KdtuneError, match=r"^margin: must be a positive AP difference"):
        check_level(margin, 0.95)


@given(confidence=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0)))
def test_a_confidence_outside_zero_one_is_refused(confidence: float) -> None:
    with pytest.raises(KdtuneError, match=r"^confidence: must be between 0 and 1"):
        check_level(0.005, confidence)


@pytest.mark.parametrize(
    ("f", "d1", "d2", "p"),
    [
        # scipy.stats.f.sf at these points (golden values)
        (2.5, 3, 10, 0.11903956265827809),
        (0.33, 5, 120, 0.8940089099204946),
        (4.2, 7, 30, 0.0024761469026165317),
    ],
)
def test_f_survival_matches_reference_values(f: float, d1: float, d2: float, p: float) -> None:
    from kdtune.inference import f_sf

    assert f_sf(f, d1, d2) == pytest.approx(p, rel=1e-10)


def test_f_survival_closed_forms() -> None:
    from kdtune.inference import f_sf

    assert f_sf(1.0, 7, 7) == pytest.approx(0.5, abs=1e-13)  # symmetric at 1 when d1 = d2
    for f in (0.1, 1.0, 3.0):  # d1 = 2: (1 + 2f/d2)^(−d2/2)
        assert f_sf(f, 2, 9) == pytest.approx((1 + 2 * f / 9) ** -4.5, rel=1e-12)
    assert f_sf(0.0, 3, 4) == 1.0 and f_sf(-1.0, 3, 4) == 1.0
    with pytest.raises(ValueError):
        f_sf(1.0, 0, 4)

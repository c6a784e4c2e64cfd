"""The arithmetic of a paired verdict, free of pose estimation: Student's t, a seed-by-image
variance split, two one-sided tests, Holm's step-down, and seeds still needed (and Fisher's F
for the pooled model's lack-of-fit test).

Everything here takes plain numbers; :mod:`kdtune.verdict` feeds it per-seed differences and
their bootstrap replicates over images. The distributions are computed here (no scipy at run
time): the regularized incomplete beta function by its continued fraction, Student's t from
it, quantiles by safeguarded Newton steps.

Model of a paired difference ΔAP between two configurations trained with the same seeds and
scored on the same images (a crossed seeds × images design)::

    Var(mean over R seeds, N images) = σ²_seed / R + σ²_image / N + σ²_seed×image / (R N)

- ``s²/R`` (``s``: the sd of the R per-seed differences, R − 1 degrees of freedom) estimates
  ``σ²_seed / R + σ²_seed×image / (R N)``;
- the image bootstrap of the seed mean estimates ``σ²_image / N + σ²_seed×image / (R N)``, and
  the mean of the per-seed image-bootstrap variances ``σ²_image / N + σ²_seed×image / N``, so
  their difference takes the interaction out of the image part (counted once, in ``s²/R``);
- the two parts add, with Welch–Satterthwaite degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from kdtune.errors import KdtuneError

_EPS = 1e-15
SEED_BOUND = 0.3  # at most: the seed part weighs in the df at its 70 % upper bound or higher
_TINY = 1e-300


def normal_cdf(x: float) -> float:
    """P(Z ≤ x) for a standard normal Z."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def beta_inc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction
    (evaluated with Lentz's method), on the side of x where it converges fast."""
    if not (a > 0 and b > 0):
        raise ValueError(f"beta_inc: a and b must be positive, got {a}, {b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - beta_inc(b, a, 1.0 - x)
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b)) / a
    f, c, d = 1.0, 1.0, 0.0
    for i in range(1000):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + num / c
        c = c if abs(c) > _TINY else _TINY
        f *= c * d
        if abs(1.0 - c * d) < _EPS:
            break
    return front * (f - 1.0)


def t_cdf(x: float, df: float) -> float:
    """P(T ≤ x) for Student's t with ``df`` degrees of freedom (the normal when df is inf)."""
    if not df > 0:
        raise ValueError(f"t_cdf: degrees of freedom must be positive, got {df}")
    if math.isinf(df):
        return normal_cdf(x)
    if x == 0.0:
        return 0.5
    if x * x < df:  # near 0: P(|T| < |x|) directly, without cancelling against 1
        central = 0.5 * beta_inc(0.5, df / 2.0, x * x / (df + x * x))
        return 0.5 + central if x > 0 else 0.5 - central
    tail = 0.5 * beta_inc(df / 2.0, 0.5, df / (df + x * x))
    return 1.0 - tail if x > 0 else tail


def _t_pdf(x: float, df: float) -> float:
    if math.isinf(df):
        return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    log = (
        math.lgamma((df + 1) / 2)
        - math.lgamma(df / 2)
        - 0.5 * math.log(df * math.pi)
        - (df + 1) / 2 * math.log1p(x * x / df)
    )
    return math.exp(log)


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``df`` = inf: the
    normal): Newton steps on :func:`t_cdf`, kept inside a shrinking bracket."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    x = (low + high) / 2.0
    for _ in range(200):
        err = t_cdf(x, df) - p
        if err > 0:
            high = x
        else:
            low = x
        step = x - err / max(_t_pdf(x, df), _TINY)
        if err == 0.0 or abs(step - x) <= 1e-15 * max(1.0, x) or high - low <= 1e-15 * x:
            return step if low <= step <= high else x
        x = step if low < step < high else (low + high) / 2.0
    return x


def normal_quantile(p: float) -> float:
    """The ``p`` quantile of the standard normal."""
    return t_quantile(p, math.inf)


def gamma_p(a: float, x: float) -> float:
    """The regularized lower incomplete gamma function P(a, x), by its power series."""
    if x <= 0:
        return 0.0
    term = total = 1.0 / a
    n = 0
    while abs(term) > 1e-17 * abs(total) and n < 10_000:
        n += 1
        term *= x / (a + n)
        total += term
    return min(1.0, total * math.exp(a * math.log(x) - x - math.lgamma(a)))


def f_sf(f: float, d1: float, d2: float) -> float:
    """P(F > ``f``) for Fisher's F with ``d1`` and ``d2`` degrees of freedom (from
    :func:`beta_inc`: P(F ≤ f) = I_x(d1/2, d2/2), x = d1 f / (d1 f + d2))."""
    if not (d1 > 0 and d2 > 0):
        raise ValueError(f"f_sf: degrees of freedom must be positive, got {d1}, {d2}")
    if f <= 0:
        return 1.0
    return 1.0 - beta_inc(d1 / 2.0, d2 / 2.0, d1 * f / (d1 * f + d2))


@lru_cache(maxsize=256)
def chi2_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of the chi-squared distribution with ``df`` degrees of freedom
    (bisection on :func:`gamma_p`)."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"chi2_quantile: p in (0, 1) and df > 0, got {p}, {df}")
    low, high = 0.0, max(1.0, df)
    while gamma_p(df / 2.0, high / 2.0) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if gamma_p(df / 2.0, mid / 2.0) < p:
            low = mid
        else:
            high = mid
        if high - low <= 1e-14 * high:
            break
    return (low + high) / 2.0


def satterthwaite(parts: Sequence[tuple[float, float]]) -> float:
    """Welch–Satterthwaite degrees of freedom of a sum of variance estimates, each given as
    (variance, its degrees of freedom); a part of variance 0 adds nothing."""
    total = sum(v for v, _ in parts)
    denom = sum(v * v / df for v, df in parts if v > 0)
    if total <= 0 or denom <= 0:
        return max((df for _, df in parts), default=1.0)
    return total * total / denom


@dataclass(frozen=True)
class PairedEstimate:
    """A mean over seeds of a paired difference, with its variance split into a seed part
    (``seed_var``: s²/R, ``seeds - 1`` df) and an image part (``image_var``: the images' main
    effect, ``images - 1`` df). With one seed nothing measures the seeds: ``seed_var`` is 0,
    ``image_var`` holds the whole image-bootstrap variance, and :attr:`seeds_measured` is
    false."""

    mean: float
    seed_var: float
    image_var: float
    seeds: int
    images: int

    @property
    def seeds_measured(self) -> bool:
        return self.seeds >= 2

    def negated(self) -> PairedEstimate:
        """The same estimate of the difference the other way round (b − a for a − b)."""
        return PairedEstimate(-self.mean, self.seed_var, self.image_var, self.seeds, self.images)

    @property
    def var(self) -> float:
        return self.seed_var + self.image_var

    @property
    def se(self) -> float:
        return math.sqrt(self.var)

    @property
    def seed_sd(self) -> float:
        """The sd of one seed's difference around the mean (0 when unmeasured)."""
        return math.sqrt(self.seed_var * self.seeds)

    def df(self, tail: float = 0.025) -> float:
        """Degrees of freedom of the whole for a test (or interval) with one-sided tail
        ``tail``: Welch–Satterthwaite, with the seed part taken at its one-sided upper
        confidence bound ``s²/R · k / χ²(q; k)`` (k = R − 1, q = :func:`seed_bound`) when
        weighing the parts, so that a seed spread that came out small by chance (likely with
        k = 1 or 2) does not buy the many degrees of freedom of the images. The smaller the
        tail, the higher the bound (docs/statistics.md has the coverage this gives)."""
        image_df = float(max(self.images - 1, 1))
        if not self.seeds_measured:
            return image_df
        k = self.seeds - 1.0
        bound = self.seed_var * k / chi2_quantile(seed_bound(tail), k)
        return satterthwaite([(bound, k), (self.image_var, image_df)])

    def interval(self, confidence: float) -> tuple[float, float]:
        tail = (1.0 - confidence) / 2.0
        half = t_quantile(1.0 - tail, self.df(tail)) * self.se
        return self.mean - half, self.mean + half

    def p_differs(self, level: float = 0.05) -> float:
        """Two-sided p-value of "the difference is 0", for a test at ``level``."""
        if self.se <= 0:
            return 1.0 if self.mean == 0 else 0.0
        return 2.0 * (1.0 - t_cdf(abs(self.mean) / self.se, self.df(level / 2.0)))

    def p_equivalent(self, margin: float, level: float = 0.05) -> float:
        """p-value of "the difference is at least ``margin`` away from 0" by two one-sided
        tests (TOST) each at ``level``: the larger of the two one-sided p-values."""
        if self.se <= 0:
            return 0.0 if abs(self.mean) < margin else 1.0
        df = self.df(level)
        below = 1.0 - t_cdf((self.mean + margin) / self.se, df)  # H0: Δ ≤ −margin
        above = t_cdf((self.mean - margin) / self.se, df)  # H0: Δ ≥ +margin
        return max(below, above)


def seed_bound(tail: float) -> float:
    """The lower chi-squared quantile level q of the seed part's upper bound for a one-sided
    tail: ``min(0.3, 12 · tail)`` (0.3 for a 95 % interval, 0.1 for a 0.05/3 two-sided
    test). Chosen by simulation: plain Satterthwaite (q = 0.5) over-rejects with one or two
    seed degrees of freedom, more so the smaller the tail."""
    return min(SEED_BOUND, 12.0 * tail)


def paired_estimate(
    per_seed: Sequence[float], replicates: np.ndarray, images: int
) -> PairedEstimate:
    """The :class:`PairedEstimate` of per-seed differences ``per_seed`` (R values on all
    images) and their image-bootstrap ``replicates`` ([B, R]: replicate b's difference for
    seed r, every seed on the same draw of images) over ``images`` images."""
    d = np.asarray(per_seed, dtype=float)
    reps = np.asarray(replicates, dtype=float)
    r = len(d)
    if r == 0 or reps.ndim != 2 or reps.shape[1] != r or reps.shape[0] < 2:
        raise ValueError(f"paired_estimate: {r} seeds and replicates of shape {reps.shape}")
    mean_var = float(np.var(reps.mean(axis=1), ddof=1))
    if r == 1:
        return PairedEstimate(float(d.mean()), 0.0, mean_var, 1, images)
    per_seed_var = float(np.mean(np.var(reps, axis=0, ddof=1)))
    interaction = max(per_seed_var - mean_var, 0.0) / (r - 1)
    image_var = max(mean_var - interaction, 0.0)
    seed_var = float(np.var(d, ddof=1)) / r
    return PairedEstimate(float(d.mean()), seed_var, image_var, r, images)


def holm(pvalues: Sequence[float], cap: int | None = None) -> list[float]:
    """Holm's step-down adjusted p-values: the k-th smallest (from 0) is multiplied by
    ``min(n - k, cap)``, made monotone and capped at 1. ``cap`` is the most hypotheses that
    can be true at once (each comparison's "differs" and "equivalent" cannot both be true),
    which keeps the family-wise error at the level (the step at which the first true
    hypothesis is rejected faces at most ``min(n - k, cap)`` true ones)."""
    n = len(pvalues)
    limit = n if cap is None else max(1, min(cap, n))
    order = sorted(range(n), key=lambda i: pvalues[i])
    adjusted = [1.0] * n
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, min(n - k, limit) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted


def holm_tests(
    order: Sequence[float],
    rejects: Sequence[Callable[[float], bool]],
    level: float,
    cap: int | None = None,
) -> list[float | None]:
    """Holm's step-down with tests whose critical values depend on their level: hypotheses
    taken in the order of ``order`` (p-values, smallest first); the k-th (from 0) is tested at
    ``level / min(n - k, cap)`` by ``rejects[i](that level)``; the first that stands stops
    the procedure. Returns, per hypothesis, the level it was rejected at, or None. Valid as
    Holm is, because a test that rejects at a level also rejects at any larger one."""
    n = len(order)
    limit = n if cap is None else max(1, min(cap, n))
    out: list[float | None] = [None] * n
    for k, i in enumerate(sorted(range(n), key=lambda j: order[j])):
        faced = level / min(n - k, limit)
        if not rejects[i](faced):
            break
        out[i] = faced
    return out


def seeds_needed(
    est: PairedEstimate, margin: float, level: float, *, power: float = 0.8, most: int = 200
) -> int | None:
    """How many seeds in all (``≥ est.seeds + 1``) would make a claim likely, taking the
    observed mean and spreads as the truth: a difference when ``|mean|`` is at least
    ``(z(1 − level/2) + z(power)) · se``, equivalence when ``margin − |mean|`` is at least
    ``(z(1 − level) + z(power)) · se`` (normal approximation), with se² = seed_sd²/R +
    image_var. None when one seed leaves the seed spread unmeasured, or no count up to
    ``most`` would do (the images' own spread, or a mean right at the margin, decides)."""
    if not est.seeds_measured:
        return None
    z_power = normal_quantile(power)
    targets = []
    gap_diff = abs(est.mean) / (normal_quantile(1.0 - level / 2.0) + z_power)
    gap_equiv = (margin - abs(est.mean)) / (normal_quantile(1.0 - level) + z_power)
    for gap in (gap_diff, gap_equiv):
        room = gap * gap - est.image_var
        if gap <= 0 or room <= 0:
            continue
        seed_var_one = est.seed_var * est.seeds
        targets.append(max(est.seeds + 1, math.ceil(seed_var_one / room)))
    best = min(targets, default=None)
    return best if best is not None and best <= most else None


def check_level(margin: float, confidence: float) -> None:
    """Refuse a margin that is not positive and a confidence outside (0, 1), in one line."""
    if not (isinstance(margin, int | float) and math.isfinite(margin) and margin > 0):
        raise KdtuneError(f"margin: must be a positive AP difference such as 0.005, got {margin}")
    if not (isinstance(confidence, int | float) and 0.0 < confidence < 1.0):
        raise KdtuneError(f"confidence: must be between 0 and 1 (e.g. 0.95), got {confidence}")

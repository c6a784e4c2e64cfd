"""What a *model-based* equivalence claim says in finished searches, beside the truth.

A race's paired test cannot declare two weightings 0.002 AP apart equivalent within ±0.005 at
24 seeds (docs/known-answer.md: the paired seed sd between weightings is ~0.007). The pooled
model of all a search's full-budget runs (:mod:`kdtune.pooled`, AP ~ β̄ + β̄² + seed) estimates
their difference far more tightly, *if* AP is smooth in β̄. This script prints, for each search,
the model's difference between the recommendation and each other weighting it raced, with an
interval at the verdict block's strictest Holm step (one-sided ``level / claims``), whether that
interval lies inside ±margin, and the truth's paired difference where the truth table has both.
The verdict block now makes such a claim itself (docs/statistics.md, "Equivalent by the pooled
model"), with guards this script leaves out; it stays as the plain measurement of the model's
differences beside the truth's::

    python benchmarks/model_equivalence.py /tmp/ka/qs6/quickstart_cocolike_settle_sampler{1,2,3} \\
        --truth benchmarks/known_answer/synthetic-cocolike.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kdtune.errors import KdtuneError  # noqa: E402
from kdtune.inference import t_quantile  # noqa: E402
from kdtune.pooled import Fit, Run, fit  # noqa: E402


def model_claims(
    model: Fit, chosen: str, others: list[str], margin: float, level: float, claims: int
) -> dict[str, dict[str, Any]]:
    """The model's difference ``chosen − other`` for each other weighting, its interval at the
    one-sided level ``level / claims``, and whether that interval lies inside ±``margin``."""
    q = t_quantile(1 - level / claims, model.dof)
    out = {}
    for other in others:
        mean, se = model.difference(chosen, other)
        low, high = mean - q * se, mean + q * se
        out[other] = {"mean": mean, "se": se, "low": low, "high": high,
                      "equivalent": -margin < low and high < margin}  # fmt: skip
    return out


def search_runs(folder: Path) -> tuple[str, list[Run], list[str], dict[str, Any]]:
    """A finished search's recommendation, its full-budget runs (trials and race), the
    weightings its race trained, and its verdict."""
    from kdtune.results import SEARCH_FILE, SearchResult

    if not (folder / SEARCH_FILE).is_file():
        raise KdtuneError(f"model_equivalence: no {SEARCH_FILE} in {folder}")
    result = SearchResult.load(folder / SEARCH_FILE)
    if result.recommended is None or result.verdict is None:
        raise KdtuneError(f"model_equivalence: {folder} recommended nothing")
    runs = [
        Run(t.reported_schedule, int(t.config.get("seed", 0)), float(t.value(result.metric) or 0))
        for t in [*result.trials, *result.confirmations]
        if t.state == "complete" and t.value(result.metric) is not None
    ]
    raced = sorted({t.reported_schedule for t in result.confirmations})
    return result.recommended, runs, raced, result.verdict


def main(argv: list[str] | None = None) -> None:
    from kdtune.schedules import words

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("searches", type=Path, nargs="+")
    p.add_argument("--truth", type=Path, default=None)
    args = p.parse_args(argv)
    truth = {}
    if args.truth is not None:
        truth = {r["schedule"]: r["aps"] for r in json.loads(args.truth.read_text())["table"]}
    for folder in args.searches:
        try:
            chosen, runs, raced, verdict = search_runs(folder)
        except KdtuneError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        model = fit(runs)
        if model is None:
            print(f"{folder}: too few runs for the model")
            continue
        level, claims = float(verdict["family"]["level"]), int(verdict["family"]["claims"])
        others = [c for c in raced if c != chosen]
        sd, each = model.residual_sd, level / claims
        print(f"{folder.name}: {words(chosen)}; the model of {model.runs} runs "
              f"(residual sd {sd:.4f}), one-sided {each:.3%} a claim")  # fmt: skip
        for other, c in model_claims(
            model, chosen, others, verdict["margin"], level, claims
        ).items():
            known = ""
            if chosen in truth and other in truth:
                diffs = [
                    truth[chosen][s] - truth[other][s] for s in truth[chosen] if s in truth[other]
                ]
                known = f"  truth {statistics.mean(diffs):+.4f}"
            eq = "equivalent" if c["equivalent"] else "-"
            print(f"  vs {words(other):28s} {c['mean']:+.4f} ± {c['se']:.4f} "
                  f"[{c['low']:+.4f}, {c['high']:+.4f}] {eq}{known}")  # fmt: skip


if __name__ == "__main__":
    main()

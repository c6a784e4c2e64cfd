"""The confirmation stage's plan (which configurations, which seeds) and what export takes
from it, on constructed search records (the Ray run itself is in the end-to-end test)."""

from __future__ import annotations

import pytest

from kdtune.errors import KdtuneError
from kdtune.export import recommended_trial
from kdtune.results import SearchResult, TrialRecord
from kdtune.tune import confirm_plan


def _trial(tid: str, schedule: str, ap: float | None, state: str = "complete") -> TrialRecord:
    history = [{"epoch": 1.0, "val/ap": 0.01}] + ([{"epoch": 4.0, "val/ap": ap}] if ap else [])
    config = {"level": "second", "schedule": schedule, "seed": 5, "epochs": 4, "eval_every": 1}
    return TrialRecord(tid, state, config, history=history)


def _result() -> SearchResult:
    return SearchResult(
        name="s",
        space_file="s.yaml",
        results_dir="/tmp/s",
        trials=[
            _trial("a", "fixed:0.9", 0.30),
            _trial("b", "fixed:0.9", 0.35),  # the same schedule again: counted once
            _trial("c", "cosine:0.8:0.4", 0.32),
            _trial("d", "fixed:0.5", 0.50, state="pruned"),  # pruned: never confirmed
            _trial("e", "fixed:0.75", 0.20),
        ],
    )


def test_the_plan_takes_the_best_distinct_schedules_and_the_default_with_new_seeds() -> None:
    points = confirm_plan(_result(), top_k=2, seeds=3, default_schedule="fixed:0.75")
    assert [p["schedule"] for p in points[::3]] == ["fixed:0.9", "cosine:0.8:0.4", "fixed:0.75"]
    assert [p["seed"] for p in points[:3]] == [6, 7, 8]  # never the search's seed 5
    for p in points:
        assert p["stage"] == "confirm" and p["number"] is None and p["params"] == {}
        assert p["train"]["seed"] == p["seed"] and p["train"]["schedule"] == p["schedule"]
        # evaluated and checkpointed as the search's trials were: resumed mid-run
        assert (p["train"]["eval_every"], p["train"]["epochs"]) == (1, 4)


def test_the_default_comes_once_beside_the_best_others() -> None:
    points = confirm_plan(_result(), top_k=1, seeds=1, default_schedule="fixed:0.9")
    assert [p["schedule"] for p in points] == ["cosine:0.8:0.4", "fixed:0.9"]
    assert points[1]["train"]["schedule"] == "fixed:0.9"  # its own search trial's config
    points = confirm_plan(_result(), top_k=5, seeds=1, default_schedule="fixed:0.9")
    assert [p["schedule"] for p in points] == ["cosine:0.8:0.4", "fixed:0.75", "fixed:0.9"]


def test_no_complete_trial_gives_no_plan() -> None:
    result = _result()
    result.trials = [t for t in result.trials if t.state != "complete"]
    assert confirm_plan(result, top_k=2, seeds=3, default_schedule="fixed:0.75") == []


def test_export_takes_the_confirmed_recommendation_not_the_search_best() -> None:
    result = _result()
    assert recommended_trial(result).trial_id == "b"  # unconfirmed: the search's best
    result.verdict = {"recommended": "cosine:0.8:0.4", "ranking": [], "comparisons": []}
    assert recommended_trial(result).trial_id == "c"
    # a recommendation with no search trial of its own: a confirmation run, at the search seed
    run = _trial("r1", "fixed:0.6", 0.4)
    run.config.update(seed=7, eval_every=4)
    result.confirmations = [run]
    result.verdict["recommended"] = "fixed:0.6"
    chosen = recommended_trial(result)
    assert chosen.config["schedule"] == "fixed:0.6" and chosen.config["seed"] == 5
    assert chosen.config["eval_every"] == 1 and run.config["seed"] == 7  # the run is untouched
    result.confirmations = []
    with pytest.raises(KdtuneError, match="has no run to export"):
        recommended_trial(result)


def test_a_teacher_no_better_than_its_students_withholds_the_recommendation() -> None:
    result = _result()
    result.teacher_val_ap = 0.6
    assert result.withheld is None and result.recommended == "fixed:0.9"
    result.teacher_val_ap = 0.35  # the best student reached 0.35
    assert result.withheld is not None and "no better than the best student" in result.withheld
    assert result.recommended is None
    with pytest.raises(KdtuneError, match=r"teacher .* no better than the best student"):
        recommended_trial(result)
    # confirmed: judged on the recommendation's mean, not on the search's lucky best
    result.verdict = {
        "recommended": "fixed:0.9",
        "ranking": [{"schedule": "fixed:0.9", "mean": 0.34, "se": 0.01, "values": {}}],
        "comparisons": [],
    }
    assert result.withheld is None and result.recommended == "fixed:0.9"

"""The terminal presentation of a search: progress, the answer, the summary table."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from kdtune.console import (
    Progress,
    estimate_eta,
    format_answer,
    format_params,
    format_seconds,
    progress_table,
    summary_table,
)
from kdtune.results import COMPLETE, FAILED, PRUNED, RUNNING, SearchResult, TrialRecord


def render(renderable: object) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def record(
    trial_id: str, state: str, aps: list[float], number: int, alpha: float = 0.3, **kw: object
) -> TrialRecord:
    history = [{"epoch": float(i + 1), "val/ap": ap} for i, ap in enumerate(aps)]
    config = {"level": "second", "schedule": f"fixed:{1 - alpha:g}"}
    rec = TrialRecord(trial_id, state, config, {"alpha": alpha}, number, history)
    for key, value in kw.items():
        setattr(rec, key, value)
    return rec


def result() -> SearchResult:
    return SearchResult(
        name="demo",
        space_file="demo.yaml",
        results_dir="/r/demo",
        trials=[
            record("aaa", COMPLETE, [0.2, 0.5], 0, checkpoint_dir="/r/demo/ckpt"),
            record("bbb", COMPLETE, [0.3, 0.61, 0.6], 1, alpha=0.25),
            record("ccc", PRUNED, [0.1], 2),
            record("ddd", FAILED, [], 3, error="ValueError: x", diverged=True),
        ],
    )


def test_format_seconds_golden() -> None:
    assert [format_seconds(s) for s in (None, 0, 42.4, 185, 3720, float("nan"))] == [
        "?",
        "0s",
        "42s",
        "3m05s",
        "1h02m",
        "?",
    ]


def test_estimate_eta_from_the_pace_so_far() -> None:
    assert estimate_eta(60.0, 10, 5) == 30.0
    assert estimate_eta(60.0, 0, 5) is None
    assert estimate_eta(60.0, 10, -3) == 0.0


def test_format_params() -> None:
    assert format_params({"alpha": 0.123456, "shape": "cosine", "batch_size": 32}) == (
        "alpha=0.1235, shape=cosine, batch_size=32"
    )


def test_summary_table_puts_the_best_first_and_marks_it_unconfirmed() -> None:
    text = render(summary_table(result()))
    lines = [line for line in text.splitlines() if any(t in line for t in ("aaa", "bbb", "ccc"))]
    # a trial's value is its final evaluation's (0.60), not its best epoch's (0.61)
    assert "bbb *" in lines[0] and "0.6000" in lines[0]
    assert "α 0.25 / β 0.75" in lines[0] and "fixed:" not in text  # the weighting in words
    assert "aaa" in lines[1] and "ccc" in lines[2]
    assert "failed (diverged)" in text
    assert "2 complete, 1 pruned, 1 failed" in text
    assert "* the single-seed best (unconfirmed)" in " ".join(text.split())  # the caption


def test_the_answer_without_a_confirmation_is_the_single_seed_best_marked_unconfirmed() -> None:
    text = format_answer(result())
    lines = text.splitlines()
    assert lines[0] == "answer:"
    assert lines[1].startswith("  unconfirmed: this search has no confirmation")
    assert lines[2] == (
        "  single-seed best (unconfirmed): α 0.25 / β 0.75 [fixed:0.75], val/ap 0.6000 "
        "(trial bbb, one training seed, chosen on the same images it is scored on)"
    )
    assert "  parameters  alpha=0.25" in lines


def test_the_answer_without_a_complete_trial() -> None:
    r = result()
    r.trials = [t for t in r.trials if t.state != COMPLETE]
    assert format_answer(r).splitlines()[1] == (
        "  no answer: this search has no confirmation (its space has none, or it predates "
        "confirmation), and no trial completed with a val/ap value"
    )


def test_progress_table_shows_counts_best_and_time() -> None:
    p = Progress(
        name="demo",
        metric="val/ap",
        counts={RUNNING: 2, COMPLETE: 3, PRUNED: 1, FAILED: 0},
        num_samples=10,
        best_value=0.61,
        best_trial="bbb",
        elapsed_s=125.0,
        eta_s=60.0,
        epochs_done=31,
        epochs_budget=100,
    )
    text = render(progress_table(p))
    assert "2 running, 3 complete, 1 pruned, 0 failed, 4 waiting (of 10)" in text
    assert "0.6100 (trial bbb)" in text
    assert "2m05s elapsed, about 1m00s left" in text
    assert "31 run (budget at most 100)" in text


def test_search_summary_never_breaks_a_path_at_a_narrow_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdtune.api import SearchOutcome
    from kdtune.cli import _print_search
    from kdtune.diagnose import search_report

    monkeypatch.setenv("COLUMNS", "60")
    res = result()
    long_path = "/results/" + "deep/" * 16 + "checkpoint_000011"
    assert res.best is not None
    res.best.checkpoint_dir = long_path
    _print_search(SearchOutcome(res, search_report([]), "sqlite:///" + long_path, None, 0.5))
    lines = capsys.readouterr().out.splitlines()
    assert any(line.strip() == f"checkpoint  {long_path}" for line in lines)
    assert any(line.startswith("tracking: sqlite:///" + long_path) for line in lines)


def test_search_json_follows_its_folder_when_moved(tmp_path: Path) -> None:
    """Paths inside a search's folder are stored relative to it: a moved folder reads its own
    study and checkpoints; a path outside it stays as it was."""
    import json
    import shutil

    folder = tmp_path / "a" / "s"
    ckpt = folder / "ray" / "trial_0" / "checkpoint_000001"
    ckpt.mkdir(parents=True)
    outside = str(tmp_path / "elsewhere" / "ckpt")
    result = SearchResult(
        "s", "s.yaml", str(folder), study_storage=f"sqlite:///{folder / 'optuna.db'}",
        trials=[
            TrialRecord("t0", "complete", {}, checkpoint_dir=str(ckpt)),
            TrialRecord("t1", "complete", {}, checkpoint_dir=outside),
        ],
    )  # fmt: skip
    result.save(folder / "search.json")
    stored = json.loads((folder / "search.json").read_text())
    assert stored["study_storage"] == "sqlite:///optuna.db"
    assert stored["trials"][0]["checkpoint_dir"] == "ray/trial_0/checkpoint_000001"
    shutil.move(str(tmp_path / "a"), tmp_path / "b")
    moved = SearchResult.load(tmp_path / "b" / "s" / "search.json")
    new = tmp_path / "b" / "s"
    assert moved.results_dir == str(new)
    assert moved.study_storage == f"sqlite:///{new / 'optuna.db'}"
    assert moved.trials[0].checkpoint_dir == str(new / "ray" / "trial_0" / "checkpoint_000001")
    assert moved.trials[1].checkpoint_dir == outside

"""``kdtune compare``: rendering and plots on constructed frames (fast), and the frame read back
from a real MLflow SQLite store (slow: creating a store runs MLflow's migrations)."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kdtune import compare, tracking
from kdtune.errors import KdtuneError
from kdtune.results import SearchResult, TrialRecord


def frame() -> pd.DataFrame:
    """Three trials in the shape :func:`kdtune.tracking.load_trials` returns."""
    rows = [
        ("s1", "t0", 0, "r0", "second", 0.25, "fixed:0.75",
         5, "complete", 0.4123, "overfitting", "more distillation", "fixed:0.8", "search", 0),
        ("s1", "t1", 1, "r1", "second", math.nan, "linear:0.9:0.5",
         2, "pruned", 0.1, "plateau", "a|b", "", "search", 0),
        ("s2", "t2", None, "r2", "chain", math.nan, "fixed:0.7 -> fixed:0.75",
         0, "failed", math.nan, "none", "", "", "confirm", 3),
    ]  # fmt: skip
    df = pd.DataFrame(rows, columns=list(tracking.TRIAL_COLUMNS))
    df["number"] = df["number"].astype("Int64")
    return df


def test_table_is_aligned_with_missing_values_as_dashes() -> None:
    text = compare.render(frame(), "table")
    # the weighting in words (α and β spelled out), never the spec, in what a person reads
    wide = "first level α 0.3 / β 0.7, second level α 0.25 / β 0.75"
    assert text.splitlines() == [
        f"search  trial  level   {'weighting':<{len(wide)}}  "
        "epochs_run  state     stage    seed  val_ap  diagnosis",
        f"------  -----  ------  {'-' * len(wide)}  "
        "----------  --------  -------  ----  ------  -----------",
        f"s1      t0     second  {'α 0.25 / β 0.75':<{len(wide)}}  "
        "         5  complete  search      0   0.412  overfitting",
        f"s1      t1     second  {'β 0.9 → 0.5 (linear)':<{len(wide)}}  "
        "         2  pruned    search      0   0.100  plateau",
        f"s2      t2     chain   {wide}           0  failed    confirm     3       -  none",
    ]


def test_markdown_escapes_pipes_and_right_aligns_numbers() -> None:
    lines = compare.render(
        frame(), "markdown", columns=["trial", "val_ap", "recommendation"]
    ).splitlines()
    assert lines == [
        "| trial | val_ap | recommendation |",
        "|---|---:|---|",
        "| t0 | 0.412 | more distillation |",
        "| t1 | 0.100 | a\\|b |",
        "| t2 | - |  |",
    ]


def test_csv_round_trips_every_column() -> None:
    back = pd.read_csv(io.StringIO(compare.render(frame(), "csv")))
    columns = list(tracking.TRIAL_COLUMNS)
    columns.insert(columns.index("schedule"), "weighting")  # the spec in words beside it
    assert list(back.columns) == columns
    assert back["val_ap"].iloc[0] == pytest.approx(0.4123)
    assert math.isnan(back["val_ap"].iloc[2])
    assert list(back["trial"]) == ["t0", "t1", "t2"]


def test_json_is_records_with_null_for_missing() -> None:
    records = json.loads(compare.render(frame(), "json"))
    assert len(records) == 3
    assert records[0]["number"] == 0 and isinstance(records[0]["number"], int)
    assert records[0]["alpha"] == 0.25 and records[0]["schedule"] == "fixed:0.75"
    assert records[0]["weighting"] == "α 0.25 / β 0.75"
    assert records[2]["number"] is None and records[2]["val_ap"] is None
    assert records[1]["alpha"] is None


def test_empty_frame_and_bad_arguments() -> None:
    empty = frame().iloc[0:0]
    assert compare.render(empty, "table").endswith("(no trials)")
    assert compare.render(empty, "json") == "[]"
    assert compare.render(empty, "markdown").count("\n") == 1
    with pytest.raises(KdtuneError, match="unknown format 'html'"):
        compare.render(frame(), "html")
    with pytest.raises(KdtuneError, match="unknown column 'speed'"):
        compare.render(frame(), "table", columns=["trial", "speed"])
    with pytest.raises(KdtuneError, match="sort: unknown column 'speed'"):
        compare.compare_frame("sqlite:///nowhere.db", sort_by="speed")


def test_plot_comparison_writes_a_png(tmp_path: Path) -> None:
    df = frame()
    df.loc[len(df)] = ["s2", "t3", 3, "r3", "second", math.nan, "cosine:0.8:0.4",
                       5, "complete", 0.3, "healthy", "", "", "search", 0]  # fmt: skip
    out = compare.plot_comparison(df, tmp_path / "plots" / "ap.png")
    assert out == tmp_path / "plots" / "ap.png"
    assert out.read_bytes().startswith(b"\x89PNG")
    points = [compare._plot_point(r) for r in df.to_dict("records")]
    assert points[0] is not None and points[0]["alpha"] == pytest.approx(0.25)
    assert points[1] is not None and (points[1]["beta_start"], points[1]["beta_end"]) == (0.9, 0.5)
    assert points[2] is None  # a chain without AP is left out


def test_plot_to_an_unwritable_place_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(KdtuneError, match="plot: cannot write"):
        compare.plot_comparison(frame(), blocker / "ap.png")


# ------------------------------------------------------------------------------ from MLflow


def _store(factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A copy of the session's empty MLflow store (shared with test_tracking's template)."""
    template = factory.getbasetemp() / "mlflow-template" / "mlflow.db"
    if not template.is_file():
        template.parent.mkdir(parents=True, exist_ok=True)
        tracking.client("sqlite:///" + str(template)).search_experiments()
    results = factory.mktemp("compare")
    shutil.copyfile(template, results / "mlflow.db")
    return tracking.resolve_tracking_uri(
        "sqlite:///" + str(results / "mlflow.db"), results
    ), results


def _trial(trial_id: str, state: str, schedule: str, ap: float | None) -> TrialRecord:
    history: list[dict[str, Any]] = []
    if ap is not None:
        history = [
            {"epoch": 1, "train/loss": 1.0, "val/loss": 1.1, "val/ap": ap / 2},
            {"epoch": 2, "train/loss": 0.8, "val/loss": 0.9, "val/ap": ap},
        ]
    cfg = {"level": "second", "schedule": schedule, "epochs": 2, "lr": 0.002, "data": "synthetic"}
    return TrialRecord(trial_id, state, cfg, history=history)


@pytest.mark.slow
def test_compare_frame_reads_back_and_sorts(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    uri, results = _store(tmp_path_factory)
    for name, trials in {
        "alpha": [
            _trial("a0", "complete", "fixed:0.75", 0.3),
            _trial("a1", "failed", "fixed:0.5", None),
        ],
        "beta": [
            _trial("b0", "complete", "linear:0.9:0.5", 0.5),
            _trial("b1", "pruned", "fixed:0.8", 0.1),
        ],
    }.items():
        tracking.log_search_result(
            SearchResult(name, "", str(results), trials=trials), uri, results
        )

    df = compare.compare_frame(uri)
    assert list(df["trial"]) == ["b0", "a0", "b1", "a1"]  # best AP first, missing last
    assert list(
        compare.compare_frame(uri, ["alpha"], sort_by="trial", ascending=True)["trial"]
    ) == ["a0", "a1"]
    with pytest.raises(KdtuneError, match=r"unknown search 'gamma'.*alpha, beta"):
        compare.compare_frame(uri, ["gamma"])
    for fmt in compare.FORMATS:
        assert "b0" in compare.render(df, fmt)
    assert compare.plot_comparison(df, tmp_path / "ap.png").stat().st_size > 0

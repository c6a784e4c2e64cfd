"""A search's GPU figures from Ray's result files and nvidia-smi's samples (golden values)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from search_gpu_figures import figures

T0 = datetime(2026, 1, 1, 12, 0, 0).timestamp()


def _trial(folder: Path, start: float, reports: list[tuple[float, int]]) -> None:
    """A trial that started at ``T0 + start`` and reported ``(seconds after T0, epoch)``."""
    folder.mkdir(parents=True)
    lines = [
        json.dumps({"timestamp": T0 + t, "time_total_s": t - start, "epoch": e}) for t, e in reports
    ]
    (folder / "result.json").write_text("\n".join(lines) + "\n")


def _sample(seconds: float, busy: float) -> str:
    when = datetime.fromtimestamp(T0 + seconds).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
    return f"{when}, 1000, {busy}"


def test_stages_span_their_trials_and_average_the_samples_inside(tmp_path: Path) -> None:
    search = tmp_path / "s"
    _trial(search / "ray" / "exp" / "t0", 0, [(10, 2), (20, 4)])
    _trial(search / "ray" / "exp" / "t1", 5, [(25, 4)])
    _trial(search / "confirm" / "ray" / "c0", 30, [(40, 4)])
    samples = tmp_path / "samples.csv"
    rows = [_sample(s, b) for s, b in ((2, 50), (12, 70), (24, 90), (28, 0), (35, 40), (50, 99))]
    samples.write_text("\n".join(rows) + "\n")
    got = figures(search, 100, samples)
    # trials: 0 → 25 s, 8 epochs of 100 images; samples at 2, 12, 24 s
    assert got["search"]["wall_s"] == pytest.approx(25.0)
    assert got["search"]["summed_images_per_s"] == pytest.approx(800 / 25)
    assert got["search"]["gpu_busy_pct"] == pytest.approx(70.0)
    # confirmation: 30 → 40 s, 4 epochs; the sample at 35 s
    assert got["confirm"]["summed_images_per_s"] == pytest.approx(400 / 10)
    assert got["confirm"]["gpu_busy_pct"] == pytest.approx(40.0)
    # both: 0 → 40 s, the idle gap at 28 s counted
    assert got["both"]["summed_images_per_s"] == pytest.approx(1200 / 40)
    assert got["both"]["gpu_busy_pct"] == pytest.approx((50 + 70 + 90 + 0 + 40) / 5)


def test_no_trials_and_no_samples(tmp_path: Path) -> None:
    got = figures(tmp_path, 100, None)
    assert got["search"] == {"trials": 0} and got["both"] == {"trials": 0}


def test_a_population_trial_counts_each_members_epochs(tmp_path: Path) -> None:
    """A population trial reports every member's metrics under ``m<k>|``; a member pruned at
    epoch 2 trains 2 epochs, its partner 4: 6 epochs of training in the trial's span."""
    trial = tmp_path / "s" / "ray" / "exp" / "p0"
    trial.mkdir(parents=True)
    rows = [
        {"timestamp": T0 + 10, "time_total_s": 10, "epoch": 2, "m0|val/ap": 0.1, "m1|val/ap": 0.2},
        {"timestamp": T0 + 20, "time_total_s": 20, "epoch": 4, "m1|val/ap": 0.3},
    ]
    (trial / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = figures(tmp_path / "s", 100, None)
    assert got["search"]["epochs"] == 6
    assert got["search"]["summed_images_per_s"] == pytest.approx(600 / 20)

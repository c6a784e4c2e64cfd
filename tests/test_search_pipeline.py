"""The search pipeline's own units (fast): the request's resume command, the one interruption
policy (signals, a lost tracking server), the confirmation plan, the report stage's next
points. The stages end to end: tests/test_tune_search.py, test_faults.py (slow)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kdtune.errors import SearchInterrupted
from kdtune.results import SearchResult
from kdtune.search import SearchRequest, track
from kdtune.search.confirmation import ConfirmPlan
from kdtune.search.interruption import InterruptionPolicy, signals_raise, tracking_lagged
from kdtune.search.outcome import write_guided_space
from kdtune.search.records import Prepared
from kdtune.space import load_space

QUICKSTART = Path(__file__).parent.parent / "search_spaces" / "quickstart.yaml"


def test_the_resume_command_names_the_file_and_the_results_folder() -> None:
    assert SearchRequest(Path("s.yaml")).resume_command == "kdtune search s.yaml --resume"
    assert (
        SearchRequest(Path("s.yaml"), results=Path("/r")).resume_command
        == "kdtune search s.yaml --resume --results /r"
    )


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_tells_the_tracking_and_names_the_resume_command(signum: int, code: int) -> None:
    told: list[Any] = []
    result = SearchResult(name="s", space_file="s.yaml", results_dir="/r", metric="val/ap")

    def record_stop(found: SearchResult | None) -> str | None:
        told.append(found)
        return "MLflow is down" if found is not None else None

    policy = InterruptionPolicy("s", "kdtune search s.yaml --resume", record_stop)
    stopped = policy.stopped(SearchInterrupted(signum, result=result))
    name = signal.Signals(signum).name
    assert stopped.exit_code == code and stopped.result is result and told == [result]
    assert stopped.line == (
        f"interrupted: search 's' interrupted by {name}; its state is saved: continue it with "
        "`kdtune search s.yaml --resume` (MLflow lags: MLflow is down)"
    )
    # a stage stopped before it had records (the confirmation's list): no MLflow note
    bare = policy.stopped(SearchInterrupted(signum, result=[]))
    assert told[-1] is None and bare.line.endswith("`kdtune search s.yaml --resume`")
    late = policy.stopped_final_logging(SearchInterrupted(signum), result)
    assert late.exit_code == code and "`kdtune sync s` completes it" in late.line


def test_signals_raise_turns_a_sigterm_into_search_interrupted() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SearchInterrupted) as caught, signals_raise():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at once
    assert caught.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) == previous  # put back


def test_a_lost_tracking_server_is_one_line_naming_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdtune import tracking

    def down(*_args: Any, **_kwargs: Any) -> None:
        raise ConnectionError("connection refused\n  at port 5000")

    monkeypatch.setattr(tracking, "log_search_result", down)
    space = load_space(QUICKSTART)
    prepared = Prepared(SearchRequest(QUICKSTART), space, tmp_path, "http://x:5000", "id", None)
    result = SearchResult(name="quickstart", space_file="q", results_dir=str(tmp_path), metric="m")
    line = track._log_final(prepared, result)
    assert line == (
        "tracking lagged: MLflow at http://x:5000 did not take the search's final logging "
        "(ConnectionError: connection refused at port 5000); `kdtune sync quickstart` brings "
        "it up to date"
    )
    assert tracking_lagged(2, None) == (
        "tracking lagged: 2 trial(s) were not logged while the search ran (the tracking queue "
        "did not drain); the final logging caught up"
    )


def test_a_confirmation_plan_lists_each_configuration_once_in_order() -> None:
    runs = [{"schedule": s, "seed": k} for s in ("fixed:0.75", "linear:0.9:0.5") for k in (1, 2)]
    assert ConfirmPlan("fixed:0.75", runs).specs == ["fixed:0.75", "linear:0.9:0.5"]


def test_the_next_points_become_a_grid_with_the_searchs_settings(tmp_path: Path) -> None:
    space = load_space(QUICKSTART)
    out = tmp_path / "next.yaml"
    assert write_guided_space(QUICKSTART, space, [], out) is None and not out.exists()
    written = write_guided_space(QUICKSTART, space, ["fixed:0.6", "fixed:0.8"], out)
    raw = yaml.safe_load(out.read_text())
    assert written == out and raw["name"] == "quickstart-guided"
    # in the words the space's dimensions use: the quickstart searches fixed ratios as alpha
    assert raw["search"] == {"grid": [{"alpha": 0.4}, {"alpha": 0.2}]}
    write_guided_space(QUICKSTART, space, ["linear:0.9:0.5", "fixed:0.6"], out)
    mixed = yaml.safe_load(out.read_text())["search"]["grid"]
    assert mixed == [{"schedule": "linear:0.9:0.5"}, {"alpha": 0.4}]
    assert raw["sampler"] == {"type": "grid", "seed": 0} and "num_samples" not in raw["budget"]
    assert raw["budget"]["max_epochs"] == space.budget.max_epochs
    again = load_space(out)  # a valid space file, though the quickstart warm-starts
    assert again.name == "quickstart-guided" and space.warm_start_points()

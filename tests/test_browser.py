"""What a person sees at the links `kdtune ui` prints, in a real headless browser.

Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it where apt-get is
at hand) loads each printed link with its own CLI (``--dump-dom``, ``--screenshot``, with a
virtual-time budget so that MLflow's single-page app renders before the page is read). The
test is skipped where no chromium is installed. Screenshots go to ``$KDTUNE_SCREENSHOTS``,
else ``results/screenshots/`` in this checkout.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port

from kdtune import tracking
from kdtune.results import SearchResult, TrialRecord

ROOT = Path(__file__).resolve().parents[1]
ALPHAS = (0.25, 0.5, 1.0)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    """The headless browser: ``$KDTUNE_CHROMIUM``, else the first of BROWSERS on the PATH."""
    given = os.environ.get("KDTUNE_CHROMIUM")
    return given or next((p for p in map(shutil.which, BROWSERS) if p), None)


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium() is None, reason="no chromium (apt-get install chromium)"),
]


def screenshots_dir() -> Path:
    folder = Path(os.environ.get("KDTUNE_SCREENSHOTS", ROOT / "results" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def browse(url: str, profile: Path, *args: str) -> str:
    """Run headless chromium on ``url`` with ``args``; its stdout (the DOM for --dump-dom)."""
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={profile}", "--virtual-time-budget=30000",
         "--window-size=1600,1000", *args, url],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def visible_text(dom: str) -> str:
    """The words a person reads on the page: scripts, styles and tags dropped."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def _history(ap_step: float) -> list[dict[str, float]]:
    return [
        {"epoch": e, "train/loss": 1 / e, "train/student_loss": 0.6 / e,
         "train/distill_loss": 0.4 / e, "train/beta": 0.75, "val/loss": 1.2 / e,
         "val/ap": ap_step * e, "val/ap50": ap_step * e, "perf/images_per_s": 100.0}
        for e in (1, 2, 3)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small finished search (three fixed ratios), logged to a fresh SQLite store."""
    results = tmp_path_factory.mktemp("browser")
    space = results / "space.yaml"
    space.write_text("name: browser\nlevel: second\n")
    trials = [
        TrialRecord(
            f"t_{i:05d}", "complete",
            {"level": "second", "schedule": f"fixed:{1 - a}", "data": "synthetic", "epochs": 3,
             "batch_size": 16, "lr": 0.002, "seed": 0},
            {"alpha": a}, i, _history(0.05 + 0.02 * i),
        )
        for i, a in enumerate(ALPHAS)
    ]  # fmt: skip
    uri = tracking.resolve_tracking_uri(None, results)
    tracking.log_search_result(
        SearchResult("browser", str(space), str(results), trials=trials), uri, results
    )
    return {"results": results, "uri": uri, "trials": trials}


@pytest.fixture(scope="module")
def ui(search: dict[str, Any]) -> Iterator[dict[str, str]]:
    """`kdtune ui` on the search's results folder, as a user starts it; its printed links."""
    port = free_port()
    log = search["results"] / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kdtune.cli", "ui", "--port", str(port),
             "--results", str(search["results"])],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "compare its" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        printed = log.read_text()
        runs = re.search(r"browser: runs (\S+)", printed)
        compare = re.search(r"browser: compare its (\d+) trials (\S+)", printed)
        assert runs and compare, printed
        yield {"runs": runs[1], "compare": compare[2], "count": compare[1]}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_the_printed_runs_link_shows_the_trials(
    search: dict[str, Any], ui: dict[str, str], tmp_path: Path
) -> None:
    import mlflow

    client = mlflow.MlflowClient(search["uri"])
    experiment = client.get_experiment_by_name("kdtune/browser")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`kdtune.kind` = 'trial'")
    names = [r.info.run_name for r in sorted(runs, key=lambda r: -r.data.metrics["val/ap"])]
    assert len(names) == len(ALPHAS)

    text = visible_text(browse(ui["runs"], tmp_path / "profile", "--dump-dom"))
    assert "Training runs" in text  # not MLflow's GenAI overview
    assert f"{len(ALPHAS)} matching runs" in text
    where = [text.find(name) for name in names]
    assert all(i >= 0 for i in where), (names, text[:3000])
    assert where == sorted(where)  # best val/ap first
    shot = screenshots_dir() / "runs.png"
    browse(ui["runs"], tmp_path / "profile", f"--screenshot={shot}")
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000


def test_the_printed_compare_link_compares_every_trial(ui: dict[str, str], tmp_path: Path) -> None:
    assert ui["count"] == str(len(ALPHAS))
    text = visible_text(browse(ui["compare"], tmp_path / "profile", "--dump-dom"))
    assert f"Comparing {len(ALPHAS)} Runs" in text
    assert "Parallel Coordinates Plot" in text and "alpha" in text
    shot = screenshots_dir() / "compare.png"
    browse(ui["compare"], tmp_path / "profile", f"--screenshot={shot}")
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000

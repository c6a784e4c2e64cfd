"""What a person sees at the links `kdtune ui` prints, in a real headless browser, on the store of
a real finished search (Ray Tune, Optuna's grid sampler and threshold pruner, the toy trial of
tests/toy_trial.py: two trials complete, two pruned, one fails).

Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it where apt-get is
at hand) loads each printed link with its own CLI (``--dump-dom``, ``--screenshot``, with a
virtual-time budget so that MLflow's single-page app renders before the page is read). The
test is skipped where no chromium is installed. Screenshots go to ``$KDTUNE_SCREENSHOTS``
(``docs/images`` refreshes the docs' pictures), else ``screenshots/`` in the test's temporary
folder.
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

from kdtune.results import COMPLETE, FAILED, PRUNED
from kdtune.tracking.links import TRIALS_VIEW_NAME

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WINDOW = "1600,1000"

# Two good ratios complete; two poor ones fall under the threshold and are pruned at epoch 2;
# one fails.
SPACE = """
name: browser
level: second
sampler: {type: grid, seed: 0}
pruner: {type: threshold, options: {lower: 0.3, n_warmup_steps: 2}}
budget: {num_samples: 5, max_epochs: 4, eval_every: 1, max_concurrent: 2}
resources: {cpu: 1}
train: {extra: {sleep: 0.05, fail_alpha: [0.5]}}
search:
  grid: [{alpha: 0.3}, {alpha: 0.2}, {alpha: 1.0}, {alpha: 0.95}, {alpha: 0.5}]
"""


def chromium() -> str | None:
    """The headless browser: ``$KDTUNE_CHROMIUM``, else the first of BROWSERS on the PATH."""
    given = os.environ.get("KDTUNE_CHROMIUM")
    return given or next((p for p in map(shutil.which, BROWSERS) if p), None)


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium() is None, reason="no chromium (apt-get install chromium)"),
]


def browse(url: str, profile: Path, *args: str) -> str:
    """Run headless chromium on ``url`` with ``args`` in a fresh profile (a first visit: no
    columns remembered); its stdout (the DOM for --dump-dom)."""
    shutil.rmtree(profile, ignore_errors=True)
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={profile}", "--virtual-time-budget=30000",
         f"--window-size={WINDOW}", *args, url],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(url: str, profile: Path, folder: Path, name: str) -> Path:
    """A PNG of the page's first screen, kept in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / name
    browse(url, profile, f"--screenshot={shot}")
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
    return shot


def visible_text(dom: str) -> str:
    """The words a person reads on the page: scripts, styles and tags dropped."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def table_rows(dom: str) -> dict[str, dict[str, str]]:
    """The runs table as rendered: run id → column id → the cell's markup. MLflow's grid draws
    each row in several containers (pinned, scrolled), each row tagged with the run's id and
    each cell with its column's id."""
    rows: dict[str, dict[str, str]] = {}
    parts = re.split(r'row-id="([0-9a-f]{32})"', dom)
    for run_id, chunk in zip(parts[1::2], parts[2::2], strict=True):
        cells = re.split(r'col-id="([^"]+)"', chunk)
        row = rows.setdefault(run_id, {})
        for col, cell in zip(cells[1::2], cells[2::2], strict=True):
            row.setdefault(html.unescape(col), _inside(cell))
    return rows


def _inside(chunk: str) -> str:
    """A cell's content from the text after its ``col-id``: the rest of its opening tag and the
    start of the next cell's cut off."""
    content = chunk.split(">", 1)[1]
    last = content.rfind("<")
    return content[:last] if last >= 0 and ">" not in content[last:] else content


def status_icon(markup: str) -> str:
    """The first SVG drawing in a cell: MLflow's run-status icon in the start-time column."""
    found = re.search(r"<svg\b.*?</svg>", markup, flags=re.S)
    assert found, markup[:500]
    return found[0]


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small real search (Ray Tune, Optuna, the toy trial), logged to a fresh SQLite store."""
    import ray.cloudpickle
    import toy_trial

    from kdtune import tracking
    from kdtune.space import parse_space
    from kdtune.tune import run_search

    ray.cloudpickle.register_pickle_by_value(toy_trial)  # Ray's workers cannot import tests/
    results = tmp_path_factory.mktemp("browser")
    space_file = results / "space.yaml"
    space_file.write_text(SPACE)
    result = run_search(
        parse_space(SPACE, file=str(space_file)),
        results=results,
        trial_fn=toy_trial.toy_fit,
        progress=False,
    )
    states = sorted(t.state for t in result.trials)
    assert states == sorted([COMPLETE, COMPLETE, PRUNED, PRUNED, FAILED]), states
    uri = tracking.resolve_tracking_uri(None, results)
    tracking.log_search_result(result, uri, results, space_file=space_file)
    shots = Path(os.environ.get("KDTUNE_SCREENSHOTS", results / "screenshots"))
    return {"results": results, "uri": uri, "result": result, "shots": shots}


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


def trial_runs(uri: str) -> dict[str, Any]:
    """The search's trial runs as the store holds them: run id → run."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("kdtune/browser")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`kdtune.kind` = 'trial'")
    return {run.info.run_id: run for run in runs}


def test_the_runs_link_shows_val_ap_alpha_beta_state_and_diagnosis(
    search: dict[str, Any], ui: dict[str, str], tmp_path: Path
) -> None:
    runs = trial_runs(search["uri"])
    result = search["result"]
    assert len(runs) == len(result.trials)
    dom = browse(ui["runs"], tmp_path / "profile", "--dump-dom")
    text = visible_text(dom)
    assert "Training runs" in text  # not MLflow's GenAI overview
    assert TRIALS_VIEW_NAME in text  # the "Views" menu names the view: a saved view
    assert f"{len(runs)} matching runs" in text
    for header in ("final/val/ap", "alpha", "beta", "kdtune.state", "kdtune.diagnosis"):
        assert f" {header} " in text, header

    rows = table_rows(dom)
    assert set(rows) == set(runs)  # every trial drawn, none hidden
    by_state: dict[str, list[str]] = {}
    for run_id, run in runs.items():
        row = rows[run_id]
        record = next(t for t in result.trials if t.trial_id == run.data.tags["kdtune.trial_id"])
        shown = {col: visible_text(cell).strip() for col, cell in row.items()}
        # the name spells the weighting out, and says so when the trial was pruned or failed
        alpha = round(1 - float(record.config["schedule"].split(":")[1]), 6)
        assert f"α {alpha:g} / β {1 - alpha:.3g}" in shown["attributes.`Run Name`"], shown
        assert (record.state in shown["attributes.`Run Name`"]) == (record.state != COMPLETE)
        assert float(shown["params.`alpha`"]) == pytest.approx(alpha)
        assert float(shown["params.`beta`"]) == pytest.approx(1 - alpha)
        assert shown["tags.`kdtune.state`"] == record.state
        assert shown["tags.`kdtune.diagnosis`"] == run.data.tags["kdtune.diagnosis"] != ""
        value = record.value()
        if value is None:
            assert shown["metrics.`final/val/ap`"] in ("", "-"), shown
        else:
            assert float(shown["metrics.`final/val/ap`"]) == pytest.approx(value, abs=1e-3)
        by_state.setdefault(record.state, []).append(status_icon(row["runDateAndNestInfo"]))

    # a pruned trial carries the completed trials' status icon, not the failed one's cross
    completed = set(by_state[COMPLETE])
    assert len(completed) == 1 and set(by_state[PRUNED]) == completed
    assert set(by_state[FAILED]).isdisjoint(completed)

    # best final val/ap first
    names = [
        run.info.run_name
        for run in sorted(
            runs.values(), key=lambda r: -r.data.metrics.get("final/val/ap", float("-inf"))
        )
    ]
    where = [text.find(name) for name in names]
    assert all(i >= 0 for i in where) and where == sorted(where), (names, text[:3000])
    screenshot(ui["runs"], tmp_path / "profile", search["shots"], "mlflow-runs.png")


def test_the_study_pruned_what_mlflow_shows_pruned(search: dict[str, Any]) -> None:
    import optuna

    result = search["result"]
    study = optuna.load_study(study_name=result.study_name, storage=str(result.study_storage))
    optuna_state = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
    for run in trial_runs(search["uri"]).values():
        number = int(run.data.params["number"])
        pruned = optuna_state[number] == "PRUNED"
        assert (run.data.tags["kdtune.state"] == PRUNED) == pruned
        assert run.info.run_name.endswith("| pruned") == pruned
        if pruned:
            assert run.info.status == "FINISHED"


def test_the_compare_link_opens_on_val_ap_against_alpha_and_beta(
    search: dict[str, Any], ui: dict[str, str], tmp_path: Path
) -> None:
    assert ui["count"] == str(len(search["result"].trials))
    dom = browse(ui["compare"], tmp_path / "profile", "--dump-dom")
    text = visible_text(dom)
    assert f"Comparing {ui['count']} Runs" in text
    assert "Parallel Coordinates Plot" in text
    chosen = re.search(r"Parameters: (.*?) Metrics: (.*?) Clear All", text)
    assert chosen, text[:3000]
    assert chosen[1].split()[:2] == ["alpha", "beta"]
    assert chosen[2].split() == ["final/val/ap"]
    # the plot's axes, as drawn
    axes = re.findall(r'class="[^"]*axis-title[^"]*"[^>]*>([^<]+)<', dom)
    assert {"alpha", "beta", "final/val/ap"} <= set(map(html.unescape, axes)), axes
    screenshot(ui["compare"], tmp_path / "profile", search["shots"], "mlflow-compare.png")

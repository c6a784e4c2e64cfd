"""The whole product on small data: search (real Ray, real trials) logged to a real MLflow
server, compare, export with a held-out check, and ``train --config`` reproducing the export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import free_port, run_cli

from kdtune import api, tracking

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = tmp_path_factory.mktemp("mlflow")
    uri = tracking.resolve_tracking_uri(None, store)
    port = free_port()
    process = tracking.start_ui(uri, port=port, workers=1, log_file=store / "server.log")
    try:
        url = tracking.ui_url("127.0.0.1", port)
        tracking.wait_until_up(url, timeout=180, process=process)
        yield url
    finally:
        tracking.stop_ui(process)


def test_search_compare_export_reproduce(
    synth_root: Path, tmp_path: Path, server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    space = {
        "name": "e2e",
        "level": "second",
        "data": str(synth_root),
        "budget": {"max_epochs": 2, "eval_every": 1, "max_concurrent": 2},
        "resources": {"cpu": 1, "gpu": 0},
        "teacher": {"checkpoint": None, "epochs": 1, "recipe": "ground_truth"},
        "train": {"batch_size": 8, "max_train_images": 16, "max_val_images": 8},
        "sampler": {"type": "grid", "seed": 0},
        "pruner": {"type": "none"},
        "search": {"grid": [{"alpha": 0.25}, {"schedule": "linear:0.9:0.5"}]},
    }
    space_file = tmp_path / "e2e.yaml"
    space_file.write_text(yaml.safe_dump(space))
    results = tmp_path / "results"

    outcome = api.search(space_file, results=results, tracking_uri=server, progress=False)
    assert [t.state for t in outcome.result.trials] == ["complete", "complete"]
    assert {t.config["schedule"] for t in outcome.result.trials} == {"fixed:0.75", "linear:0.9:0.5"}
    assert outcome.report.n_trials == 2
    capsys.readouterr()

    code, out, err = run_cli(
        ["compare", "e2e", "--format", "json", "--tracking-uri", server, "--results", str(results)],
        capsys,
    )
    assert code == 0, err
    rows = json.loads(out)
    assert sorted(r["schedule"] for r in rows) == ["fixed:0.75", "linear:0.9:0.5"]
    assert all(r["state"] == "complete" and r["diagnosis"] for r in rows)

    # one value per trial everywhere: its final evaluation's val/ap, in search.json (the
    # records), the Optuna study, MLflow (compare reads final/val/ap) and, below, export
    import optuna

    study = optuna.load_study(
        study_name=outcome.result.study_name, storage=outcome.result.study_storage
    )
    by_number = {t.number: t.value for t in study.trials}
    for record in outcome.result.trials:
        final = record.history[-1]["val/ap"]
        assert record.value() == final
        assert by_number[record.number] == pytest.approx(final)
        row = next(r for r in rows if r["trial"] == record.trial_id)
        assert row["val_ap"] == pytest.approx(final)

    # direct links into the MLflow UI: the experiment's runs, and the compare view of its trials
    links = outcome.links
    assert links is not None and links["trials"] == 2
    assert links["runs"].startswith(server.rstrip("/") + "/#/experiments/")
    assert links["compare"].startswith(server.rstrip("/") + "/#/compare-runs?runs=")
    assert all(r["run_id"] in links["compare"] for r in rows)

    best_yaml = tmp_path / "best.yaml"
    code, out, err = run_cli(
        [
            "export",
            "e2e",
            "-o",
            str(best_yaml),
            "--bootstrap",
            "20",
            "--tracking-uri",
            server,
            "--results",
            str(results),
        ],
        capsys,
    )
    assert code == 0, err
    exported = yaml.safe_load(best_yaml.read_text())
    best = outcome.result.best
    assert best is not None
    assert exported["kdtune"]["trial"] == best.trial_id and exported["kdtune"]["mlflow_run_id"]
    assert exported["train"]["schedule"] == best.config["schedule"]
    assert exported["validation"]["val/ap"] == pytest.approx(best.history[-1]["val/ap"])
    for name in ("best", "reference"):
        low, high = exported["holdout"][name]["ap_ci95"]
        assert 0.0 <= low <= exported["holdout"][name]["ap"] + 1e-9 and low <= high <= 1.0
        assert exported["holdout"][name]["split"] == "test"
    assert exported["holdout"]["reference"]["schedule"] == "fixed:0.75"

    # the exported configuration reproduces the trial's validation figure
    code, _, err = run_cli(
        [
            "train",
            "--config",
            str(best_yaml),
            "--output",
            str(tmp_path / "again"),
            "--results",
            str(results),
        ],
        capsys,
    )
    assert code == 0, err
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["schedule"] == best.config["schedule"]
    trial_loss = best.history[-1]["val/loss"]
    assert again["final"]["val/loss"] == pytest.approx(trial_loss, rel=0.05)


def test_export_refuses_bad_paths_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        [
            "export",
            "x",
            "-o",
            str(tmp_path / "no" / "such" / "best.yaml"),
            "--results",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    code, _, err = run_cli(
        ["compare", "--tracking-uri", "http://127.0.0.1:9", "--results", str(tmp_path)], capsys
    )
    assert code == 2 and "not reachable" in err

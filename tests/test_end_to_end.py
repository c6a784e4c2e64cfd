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
from kdtune.export import recommended_trial
from kdtune.results import SearchResult

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
    tmp_path: Path, server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    space = {
        "name": "e2e",
        "level": "second",
        # the embedded default: its shipped med teacher is stronger than any student here
        # (a weaker one would withhold the recommendation), on 16 training images
        "data": "synthetic",
        "budget": {"max_epochs": 2, "eval_every": 1, "max_concurrent": 2},
        "resources": {"cpu": 1, "gpu": 0},
        "teacher": {"checkpoint": None, "recipe": "shipped"},
        "train": {"batch_size": 8, "max_train_images": 16, "max_val_images": 8},
        "sampler": {"type": "grid", "seed": 0},
        "pruner": {"type": "none"},
        "search": {"grid": [{"alpha": 0.25}, {"schedule": "linear:0.9:0.5"}]},
        "confirm": {"top_k": 2, "seeds": 2, "max_seeds": 2},  # one round
    }
    space_file = tmp_path / "e2e.yaml"
    space_file.write_text(yaml.safe_dump(space))
    results = tmp_path / "results"

    outcome = api.search(space_file, results=results, tracking_uri=server, progress=False)
    assert [t.state for t in outcome.result.trials] == ["complete", "complete"]
    assert {t.config["schedule"] for t in outcome.result.trials} == {"fixed:0.75", "linear:0.9:0.5"}
    assert outcome.report.n_trials == 2
    # the confirmation stage: both configurations (one is the seed default) and α = 1 with 2
    # new seeds, one round
    runs = outcome.result.confirmations
    assert sorted((r.config["schedule"], r.config["seed"]) for r in runs) == [
        ("fixed:0", 1),
        ("fixed:0", 2),
        ("fixed:0.75", 1),
        ("fixed:0.75", 2),
        ("linear:0.9:0.5", 1),
        ("linear:0.9:0.5", 2),
    ]
    assert [r["round"] for r in outcome.result.rounds] == [1] and all(r.round == 1 for r in runs)
    assert all(r.state == "complete" and r.stage == "confirm" for r in runs)
    verdict = outcome.result.verdict
    assert outcome.result.withheld is None  # the teacher beats the students
    assert verdict is not None and verdict["recommended"] == outcome.result.recommended
    ranking = {r["schedule"]: r for r in verdict["ranking"]}
    for r in runs:  # the ranking's values are the runs' final val AP
        assert ranking[r.config["schedule"]]["values"][str(r.config["seed"])] == pytest.approx(
            r.value(), abs=1e-9
        )
    assert verdict["sentence"].endswith("(2 seeds × 8 images)")
    assert SearchResult.load(results / "e2e" / "search.json").verdict == verdict
    capsys.readouterr()

    code, out, err = run_cli(
        ["compare", "e2e", "--format", "json", "--tracking-uri", server, "--results", str(results)],
        capsys,
    )
    assert code == 0, err
    rows = json.loads(out)
    searched = [r for r in rows if r["stage"] == "search"]
    assert sorted(r["schedule"] for r in searched) == ["fixed:0.75", "linear:0.9:0.5"]
    assert all(r["state"] == "complete" and r["diagnosis"] for r in searched)
    assert sorted((r["schedule"], r["seed"]) for r in rows if r["stage"] == "confirm") == sorted(
        (r.config["schedule"], r.config["seed"]) for r in runs
    )
    code, out, err = run_cli(
        ["compare", "e2e", "--tracking-uri", server, "--results", str(results)], capsys
    )
    assert code == 0, err
    assert "answer (e2e):" in out and verdict["sentence"] in out  # the block, as the summary

    # one value per trial everywhere: its final evaluation's val/ap, in search.json (the
    # records), the Optuna study, MLflow (compare reads final/val/ap) and, below, export
    import optuna

    study = optuna.load_study(
        study_name=outcome.result.study_name, storage=outcome.result.study_storage
    )
    by_number = {t.number: t.value for t in study.trials}
    confirmed = [t for t in study.trials if t.user_attrs.get("stage") == "confirm"]
    assert len(confirmed) == 6 and all(not t.params for t in confirmed)  # none was sampled
    assert {t.user_attrs["round"] for t in confirmed} == {1}
    assert sorted(t.value for t in confirmed) == pytest.approx(sorted(r.value() for r in runs))
    for record in outcome.result.trials:
        final = record.history[-1]["val/ap"]
        assert record.value() == final
        assert by_number[record.number] == pytest.approx(final)
        row = next(r for r in rows if r["trial"] == record.trial_id)
        assert row["val_ap"] == pytest.approx(final)

    # direct links into the MLflow UI: the experiment's runs, and the compare view of its trials
    links = outcome.links
    assert links is not None and links["trials"] == 8  # 2 trials, 6 confirmation runs
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
            "50",
            "--seeds",
            "1",
            "--tracking-uri",
            server,
            "--results",
            str(results),
        ],
        capsys,
    )
    assert code == 0, err
    exported = yaml.safe_load(best_yaml.read_text())
    best = recommended_trial(outcome.result)  # the confirmation's recommendation
    assert best.config["schedule"] == verdict["recommended"]
    assert exported["kdtune"]["trial"] == best.trial_id and exported["kdtune"]["mlflow_run_id"]
    assert exported["kdtune"]["confirmed"] is True
    assert exported["train"]["schedule"] == best.config["schedule"]
    assert exported["validation"]["val/ap"] == pytest.approx(best.history[-1]["val/ap"])
    assert exported["validation"]["confirmation"]["verdict"] == verdict["sentence"]
    holdout = exported["holdout"]
    assert holdout["split"] == "test" and holdout["seeds"] == [1000]  # a seed no search used
    compared = ["best", "reference"] if best.config["schedule"] != "fixed:0.75" else ["best"]
    assert [k for k in ("best", "reference") if k in holdout] == compared
    for name in compared:
        low, high = holdout[name]["ap_ci95"]
        assert 0.0 <= low <= holdout[name]["ap"] + 1e-9 and low <= high <= 1.0
    if "reference" in holdout:
        assert holdout["reference"]["schedule"] == "fixed:0.75"
        assert holdout["paired"]["mean"] == pytest.approx(
            holdout["best"]["ap"] - holdout["reference"]["ap"]
        )
        assert holdout["paired"]["sentence"].endswith(
            f"(1 seed × {holdout['best']['images']} images)"
        )
    else:
        assert "is the seed default" in holdout["paired"]["sentence"]

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

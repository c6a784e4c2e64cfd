"""One answer, read the same everywhere a person looks: a real search (Ray Tune, the toy trial),
its confirmation block from the statistics core, logged to a real MLflow store, then rendered by
``kdtune search``'s summary, ``kdtune compare``, ``kdtune export`` and the MLflow parent run.
Each shows the block (distillation's worth, the seed default, the equivalence set, the
family-wise statement) with α and β spelled out, never a bare spec as the answer; a search
without a confirmation says so and shows its single-seed best marked unconfirmed."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import ray.cloudpickle
import toy_trial
import yaml
from helpers import run_cli

from kdtune import tracking
from kdtune.answer import answer_text, grid_point, label
from kdtune.results import FAILED, SEARCH_FILE, SearchResult
from kdtune.schedules import SHAPES, words
from kdtune.space import parse_space
from kdtune.tracking.store import NOTE_TAG, TAG_ANSWER
from kdtune.tune import run_search
from kdtune.verdict import verdict_block

ray.cloudpickle.register_pickle_by_value(toy_trial)

SPACE = """
name: answered
level: second
sampler: {type: grid, seed: 0}
pruner: {type: none}
budget: {num_samples: 4, max_epochs: 3, eval_every: 1, max_concurrent: 2}
resources: {cpu: 1}
train: {extra: {sleep: 0.01, fail_alpha: [0.45], fail_epoch: 2}}
search:
  grid: [{alpha: 0.3}, {alpha: 0.25}, {schedule: "linear:0.9:0.5"}, {alpha: 0.45}]
"""

# a spec anywhere a person reads, outside the brackets that follow its words: a bare spec
_SPEC = re.compile(rf"\b(?:{'|'.join(SHAPES)}):[0-9]")


def bare_specs(text: str) -> list[str]:
    return [line for line in text.splitlines() if _SPEC.search(re.sub(r"\[[^\]]*\]", "", line))]


def _simulator() -> Any:
    """benchmarks/verdict_calibration.py: ImageMatches of simulated configurations."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "verdict_calibration.py"
    spec = importlib.util.spec_from_file_location("verdict_calibration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("verdict_calibration", module)
    spec.loader.exec_module(module)
    return module


def confirmation_block() -> dict[str, Any]:
    """The statistics core's block over the search's configurations, α = 1 and the seed
    default: two distilled weightings ahead of both (planted), 4 seeds."""
    sim = _simulator()
    sc = sim.Scenario("answer", seed_sd=0.05, image_sd=0.05, run_sd=0.2, images=80)
    effects = {"fixed:0": 0.0, "fixed:0.75": 0.0, "fixed:0.7": 0.6, "linear:0.9:0.5": 0.6}
    runs = sim.simulate(sc, effects, 4, np.random.default_rng(0))
    return verdict_block(runs, default="fixed:0.75", margin=0.02, samples=300)


def check_confirmed(text: str, block: dict[str, Any], where: str) -> None:
    assert f"recommendation: {label(block['recommended'])}" in text, where
    assert words(block["recommended"]) in text and " / β " in text, where
    assert "distillation's worth: " in text and "ground truth alone (α 1 / β 0)" in text, where
    assert "the seed default α 0.25 / β 0.75" in text, where
    assert "equivalent to the best within ±0.02 AP: " in text, where
    assert "% family-wise (Holm over 6 pairs" in text, where
    assert "unconfirmed" not in text, where
    assert bare_specs(text) == [], where


def check_unconfirmed(text: str, result: SearchResult, where: str) -> None:
    best = result.best
    assert best is not None
    assert "unconfirmed: this search has no confirmation" in text, where
    assert f"single-seed best (unconfirmed): {label(best.reported_schedule)}" in text, where
    assert "recommendation:" not in text and "distillation's worth" not in text, where
    assert bare_specs(text) == [], where


def test_bare_specs_are_found_outside_brackets_only() -> None:
    assert bare_specs("recommendation: fixed:0.75") == ["recommendation: fixed:0.75"]
    assert bare_specs("best: linear:0.9:0.5, val/ap 0.4") != []
    assert bare_specs("recommendation: α 0.25 / β 0.75 [fixed:0.75]") == []
    assert bare_specs("β 0.9 → 0.5 (linear)") == []


def test_a_grid_point_is_written_in_the_spaces_words() -> None:
    assert grid_point("fixed:0.75", alpha=True) == {"alpha": 0.25}
    assert grid_point("fixed:0.75", alpha=False) == {"schedule": "fixed:0.75"}
    assert grid_point("linear:0.9:0.5", alpha=True) == {"schedule": "linear:0.9:0.5"}


@pytest.mark.slow
def test_summary_compare_export_and_mlflow_show_the_same_answer_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdtune.cli import _print_search
    from kdtune.search.outcome import SearchOutcome, report_of

    space_file = tmp_path / "answered.yaml"
    space_file.write_text(SPACE)
    results = tmp_path / "results"
    space = parse_space(SPACE, file=str(space_file))
    result = run_search(space, results=results, trial_fn=toy_trial.toy_fit, progress=False)
    assert sorted(t.state for t in result.trials) == ["complete"] * 3 + [FAILED]

    # the study's trials carry their weighting in words beside the spec
    study = optuna.load_study(study_name=result.study_name, storage=result.study_storage)
    for frozen in study.get_trials():
        assert frozen.user_attrs["weighting"] == words(frozen.user_attrs["schedule"])

    # the confirmed search: the block in search.json; an older one without it, beside it
    block = confirmation_block()
    assert block["recommended"] in ("fixed:0.7", "linear:0.9:0.5")  # both ran in the search
    result.verdict = block
    result.save(results / "answered" / SEARCH_FILE)
    plain = SearchResult.load(results / "answered" / SEARCH_FILE)
    plain.name, plain.verdict = "answered-unconfirmed", None
    (results / plain.name).mkdir()
    plain.save(results / plain.name / SEARCH_FILE)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    texts: dict[str, dict[str, str]] = {"answered": {}, "answered-unconfirmed": {}}
    for name in texts:
        record = SearchResult.load(results / name / SEARCH_FILE)
        assert answer_text(record) == answer_text(result if name == "answered" else plain)
        parent, _ = tracking.log_search_result(record, uri, results, space_file=space_file)

        # MLflow's parent run: the answer as a tag (and the run's description) and a text file
        run = tracking.client(uri).get_run(parent)
        texts[name]["mlflow tag"] = run.data.tags[TAG_ANSWER]
        assert run.data.tags[NOTE_TAG] == run.data.tags[TAG_ANSWER]
        local = tracking.client(uri).download_artifacts(parent, "answer.txt", str(tmp_path))
        texts[name]["mlflow answer.txt"] = Path(local).read_text()
        assert run.data.tags["kdtune.recommended.weighting"] == words(
            run.data.tags["kdtune.recommended"]
        )
        rows = tracking.load_trials(uri, [name])
        assert rows.loc[rows["state"] == FAILED, "diagnosis"].tolist() == ["failed"]

        # kdtune search's summary: the answer first, then the trials
        _print_search(SearchOutcome(record, report_of(record), uri, None))
        summary = capsys.readouterr().out
        assert summary.index("answer:") < summary.index(f"search {name!r}")
        texts[name]["summary"] = summary

        code, out, err = run_cli(
            ["compare", name, "--tracking-uri", uri, "--results", str(results)], capsys
        )
        assert code == 0, err
        texts[name]["compare"] = out

        exported = tmp_path / f"{name}.yaml"
        code, out, err = run_cli(
            [
                *("export", name, "-o", str(exported), "--no-holdout"),
                *("--tracking-uri", uri, "--results", str(results)),
            ],
            capsys,
        )
        assert code == 0, err
        texts[name]["export"] = out
        payload = yaml.safe_load(exported.read_text())
        texts[name]["export yaml"] = payload["answer"]["text"]
        assert payload["answer"]["weighting"] == words(payload["answer"]["recommended"])
        assert payload["answer"]["recommended"] == payload["train"]["schedule"]  # machine key

    for where, text in texts["answered"].items():
        check_confirmed(text, block, where)
    for where, text in texts["answered-unconfirmed"].items():
        check_unconfirmed(text, plain, where)
    # the guidance no longer names a best of its own, nor a second "verdict"
    summary = texts["answered"]["summary"]
    assert "\nbest:" not in summary and "no verdict" not in summary
    assert "around the recommendation and its equivalents" in summary

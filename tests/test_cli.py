"""The command line: light start-up, the happy paths, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli as run


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") or lines[0].startswith("Error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from kdtune.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'pandas', 'optuna')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_models_lists_real_parameter_counts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["models"], capsys)
    assert code == 0
    assert "4,091,698" in out and "657,817" in out and "111,769" in out


def test_synth_defaults_are_the_embedded_default_sizes() -> None:
    from kdtune.cli import cli
    from kdtune.data.synth import DEFAULT_SIZES

    synth = cli.commands["data"].commands["synth"]  # type: ignore[attr-defined]
    defaults = {p.name: p.default for p in synth.params}
    assert {split: defaults[f"n_{split}"] for split in DEFAULT_SIZES} == DEFAULT_SIZES


def test_synth_then_ceiling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "set"
    code, out, _ = run(
        ["data", "synth", "--out", str(out_dir), "--n-train", "4", "--n-val", "6", "--n-test", "2"],
        capsys,
    )
    assert code == 0, out
    assert (out_dir / "annotations" / "person_keypoints_val2017.json").is_file()
    code, out, _ = run(
        ["data", "ceiling", "--data", str(out_dir), "--results", str(tmp_path / "r")], capsys
    )
    assert code == 0
    figures = json.loads(out)
    assert figures["images"] == 6 and 0.3 < figures["val/ap"] <= 1.0
    # writing again into a non-empty folder is refused, and nothing there is touched
    before = sorted(p.name for p in (out_dir / "val2017").iterdir())
    code, _, err = run(["data", "synth", "--out", str(out_dir)], capsys)
    assert_one_line_error(code, err, str(out_dir))
    assert sorted(p.name for p in (out_dir / "val2017").iterdir()) == before


def test_train_then_eval(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "run"
    args = ["train", "--level", "second", "--alpha", "1", "--data", str(synth_root),
            "--epochs", "1", "--batch-size", "8", "--max-train-images", "16",
            "--output", str(out_dir), "--results", str(tmp_path)]  # fmt: skip
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "epoch   1" in out
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["parameters"] == 111_769 and summary["schedule"] == "fixed:0"
    # a second run into the same folder is refused and the first is intact
    code, _, err = run(args, capsys)
    assert_one_line_error(code, err, "already holds a run")
    assert json.loads((out_dir / "summary.json").read_text()) == summary
    code, out, err = run(
        [
            "eval",
            str(out_dir / "model.pt"),
            "--arch",
            "tiny",
            "--data",
            str(synth_root),
            "--results",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    figures = json.loads(out)
    assert figures["images"] == 24 and 0.0 <= figures["val/ap"] <= 1.0
    # another split: its figures are named by it
    code, out, err = run(
        ["eval", str(out_dir / "model.pt"), "--arch", "tiny", "--data", str(synth_root),
         "--split", "test", "--results", str(tmp_path)],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    figures = json.loads(out)
    assert figures["split"] == "test" and figures["images"] == 8
    assert 0.0 <= figures["test/ap"] <= 1.0 and not any(k.startswith("val/") for k in figures)
    # the same weights as the wrong architecture: the mismatch is named
    code, _, err = run(
        [
            "eval",
            str(out_dir / "model.pt"),
            "--arch",
            "med",
            "--data",
            str(synth_root),
            "--results",
            str(tmp_path),
        ],
        capsys,
    )
    assert_one_line_error(code, err, "tiny")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["train", "--alpha", "1.5", "--output", "OUT"], ["--alpha", "1.5"]),
        (["train", "--alpha", "-0.1", "--output", "OUT"], ["--alpha"]),
        (["train", "--schedule", "zigzag:0.9:0.5", "--output", "OUT"], ["zigzag"]),
        (["train", "--schedule", "linear:0.9", "--output", "OUT"], ["linear"]),
        (["train", "--alpha", "0.3", "--schedule", "fixed:0.7", "--output", "OUT"], ["not both"]),
        (
            ["train", "--alpha", "1", "--data", "MISSING", "--epochs", "1", "--output", "OUT"],
            ["MISSING"],
        ),
        (["train", "--config", "MISSING.yaml", "--output", "OUT"], ["MISSING.yaml"]),
        (["train", "--teacher", "MISSING.pt", "--alpha", "0.5", "--output", "OUT"], ["MISSING.pt"]),
        (["train", "--teacher-views", "0", "--output", "OUT"], ["teacher_views", "0"]),
        (["train", "--teacher-views", "-2", "--output", "OUT"], ["teacher_views", "-2"]),
        (["train", "--teacher-bank", "NOBANK", "--output", "OUT"], ["NOBANK", "bank.json"]),
        (["eval", "MISSING.pt", "--arch", "tiny"], ["MISSING.pt"]),
        (["train", "--decoder", "openpose", "--output", "OUT"], ["decoder", "kdtune, reference"]),
        (["eval", "MISSING.pt", "--arch", "tiny", "--decoder", "x"], ["decoder: one of", "'x'"]),
        (["data", "ceiling", "--decoder", "Reference"], ["decoder", "'Reference'"]),
        (["data", "ceiling", "--data", "MISSING"], ["MISSING"]),
        (["search", "MISSING.yaml", "--dry-run"], ["MISSING.yaml"]),
        (["export", "nosuchsearch", "-o", "best.yaml", "--no-holdout"], ["nosuchsearch"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str],
    needles: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDTUNE_RESULTS", str(tmp_path / "results"))
    code, _, err = run([a.replace("OUT", str(tmp_path / "out")) for a in args], capsys)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "out" / "summary.json").exists()


def test_json_that_is_not_coco_keypoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    (root / "annotations" / "person_keypoints_val2017.json").write_text(
        json.dumps({"hello": "world"})
    )
    code, _, err = run(
        ["data", "ceiling", "--data", str(root), "--results", str(tmp_path / "r")], capsys
    )
    assert_one_line_error(code, err, "person_keypoints_val2017.json")


def test_malformed_config_and_space_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    code, _, err = run(["train", "--config", str(bad), "--output", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "bad.yaml")
    code, _, err = run(["search", str(bad), "--dry-run"], capsys)
    assert_one_line_error(code, err, "bad.yaml")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("level: second\nepochs: -3\n")
    code, _, err = run(["train", "--config", str(wrong), "--output", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "epochs", "-3")


def test_unreadable_image_is_skipped_and_counted(
    minipose: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "coco"
    shutil.copytree(minipose / "annotations", root / "annotations")
    shutil.copytree(minipose / "val2017", root / "val2017")
    victim = sorted((root / "val2017").glob("*.jpg"))[0]
    victim.write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="1"):
        code, out, err = run(
            ["data", "ceiling", "--data", str(root), "--results", str(tmp_path / "r")], capsys
        )
    assert code == 0, err
    assert json.loads(out)["images"] == 29


def test_search_dry_run_describes_the_space(capsys: pytest.CaptureFixture[str]) -> None:
    space = Path(__file__).resolve().parents[1] / "search_spaces" / "seed_scenarios.yaml"
    code, out, _ = run(["search", str(space), "--dry-run"], capsys)
    assert code == 0
    assert "grid" in out and "linear:0.9:0.5" in out


def test_search_asking_for_a_gpu_this_machine_lacks_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    text = (Path(__file__).parents[1] / "search_spaces" / "quickstart.yaml").read_text()
    space = tmp_path / "gpu.yaml"
    space.write_text(text.replace("  gpu: 0\n", "  gpu: 0.5\n"))
    code, _, err = run(["search", str(space), "--results", str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, "resources.gpu: a trial asks for 0.5 GPU", "has 0")
    assert not (tmp_path / "r" / "cache").exists()  # refused before any data or teacher work

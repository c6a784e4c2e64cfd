"""The command line: light start-up, the happy paths, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    # options left at their defaults (--epochs 10, --batch-size 16) do not override the file
    config = tmp_path / "short.yaml"
    config.write_text("train:\n  epochs: 1\n  batch_size: 8\n  seed: 3\n")
    args = ["train", "--config", str(config), "--level", "second", "--alpha", "1",
            "--data", str(synth_root), "--max-train-images", "16",
            "--output", str(out_dir), "--results", str(tmp_path)]  # fmt: skip
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "epoch   1" in out and "epoch   2" not in out
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["parameters"] == 111_769 and summary["schedule"] == "fixed:0"
    assert summary["epochs"] == 1
    config_used = json.loads((out_dir / "checkpoints" / "epoch_0001" / "config.json").read_text())
    assert (config_used["batch_size"], config_used["seed"]) == (8, 3)
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
        ["eval", str(out_dir / "model.pt"), "--net", "tiny", "--data", str(synth_root),
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
        (
            ["train", "--decoder", "openpose", "--output", "OUT"],
            ["--decoder", "'openpose'", "'kdtune', 'reference'"],
        ),
        (["eval", "MISSING.pt", "--arch", "tiny", "--decoder", "x"], ["--decoder", "'x'"]),
        (["data", "ceiling", "--decoder", "Reference"], ["--decoder", "'Reference'"]),
        (["eval", "MISSING.pt", "--net", "huge"], ["--net", "'huge'", "'teacher', 'med', 'tiny'"]),
        (["eval", "MISSING.pt", "--arch", "tiny", "--split", "dev"], ["--split", "'dev'"]),
        (["train", "--device", "gpu", "--output", "OUT"], ["--device", "'gpu'"]),
        (["train", "--level", "third", "--output", "OUT"], ["--level", "'third'"]),
        (["train", "--teacher-recipe", "pretrained", "--output", "OUT"], ["--teacher-recipe"]),
        (["train", "--teacher-targets", "exact", "--output", "OUT"], ["--teacher-targets"]),
        (["train", "--epochs", "3"], ["'-o' / '--output'"]),  # --out, the old name, not shown
        (["models", "--format", "yaml"], ["--format", "'yaml'"]),
        (["teachers", "list", "--format", "csv"], ["--format", "'csv'"]),
        (["data", "ceiling", "--data", "MISSING"], ["MISSING"]),
        (["search", "MISSING.yaml", "--dry-run"], ["MISSING.yaml"]),
        (["export", "nosuchsearch", "-o", "best.yaml", "--no-holdout"], ["nosuchsearch"]),
        (["rejudge", "nosuchsearch"], ["rejudge", "nosuchsearch"]),
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
    code, out, err = run(
        ["data", "ceiling", "--data", str(root), "--results", str(tmp_path / "r")], capsys
    )
    assert code == 0, err
    assert json.loads(out)["images"] == 29
    skipped = [line for line in err.splitlines() if line.startswith("data: skipped")]
    assert len(skipped) == 2 and victim.name in skipped[0], err  # the image, then the total
    assert "Warning" not in err and "coco.py" not in err


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
    fixed = re.sub(r"(?m)^resources: auto.*$", "resources: {cpu: 1, gpu: 0.5}", text)
    assert fixed != text
    space.write_text(fixed)
    code, _, err = run(["search", str(space), "--results", str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, "resources.gpu: a trial asks for 0.5 GPU", "has 0")
    assert not (tmp_path / "r" / "cache").exists()  # refused before any data or teacher work


# ------------------------------------------------------------------------- CLI conventions
def _commands() -> list[tuple[str, Any]]:
    """Every command (leaf), by its path: ("train", cmd), ("teachers list", cmd), ..."""
    from kdtune.cli import cli

    found: list[tuple[str, Any]] = []

    def walk(group: Any, prefix: str) -> None:
        for name, command in group.commands.items():
            path = f"{prefix} {name}".strip()
            if hasattr(command, "commands"):
                walk(command, path)
            else:
                found.append((path, command))

    walk(cli, "")
    return found


def _options(command: Any) -> list[Any]:
    import click

    return [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]


def _help_text(command: Any, option: Any) -> str:
    import click

    record = option.get_help_record(click.Context(command, info_name=command.name))
    assert record is not None, (command.name, option.name)
    return " ".join(record[1].split())


def test_every_option_has_help_and_shows_its_default() -> None:
    checked = 0
    for path, command in _commands():
        for option in _options(command):
            text = _help_text(command, option)
            assert option.help and option.help.strip(), (path, option.name)
            assert "[default: " in text or "[required]" in text, (path, option.name, text)
            checked += 1
    assert checked > 60  # every command's options were seen


def test_help_shows_the_defaults_the_api_uses() -> None:
    from kdtune.cli import cli
    from kdtune.config import TrainConfig

    train = cli.commands["train"]  # type: ignore[attr-defined]
    texts = {o.name: _help_text(train, o) for o in _options(train)}
    defaults = TrainConfig()
    for name in ("epochs", "batch_size", "lr", "eval_every", "seed", "teacher_epochs", "level"):
        assert f"[default: {getattr(defaults, name)}" in texts[name], (name, texts[name])
    # the weighting in words, both weights named (the spec stays the machine key)
    assert "[default: α 0.25 / β 0.75]" in texts["alpha"]
    assert "fixed:0.75 = α 0.25 / β 0.75" in texts["schedule"]


def test_closed_sets_are_choices_of_the_apis_constants() -> None:
    import click

    from kdtune import config
    from kdtune.data.synth import DEFAULT_SIZES
    from kdtune.models import ARCH_INFO, ARCHS

    # the light constants the CLI reads are the ones the heavy modules use
    assert config.NETS == ARCHS == tuple(ARCH_INFO)
    assert set(config.STUDENT_OF.values()) <= set(config.NETS)
    assert tuple(DEFAULT_SIZES) == config.SPLITS
    for device in config.DEVICES:
        config.TrainConfig(device=device).validate()
    closed = {
        "level": config.LEVELS,
        "decoder": config.DECODERS,
        "device": config.DEVICES,
        "teacher_recipe": config.TEACHER_RECIPES,
        "teacher_targets": config.TEACHER_TARGETS,
        "net": config.NETS,
        "split": config.SPLITS,
        "holdout_split": config.SPLITS,
    }
    seen = set()
    for path, command in _commands():
        for option in _options(command):
            if option.name in closed:
                assert isinstance(option.type, click.Choice), (path, option.name)
                assert tuple(option.type.choices) == closed[option.name], (path, option.name)
                seen.add(option.name)
    assert seen == set(closed)


def test_one_name_for_the_output_and_for_the_nets() -> None:
    outputs = []
    for path, command in _commands():
        for option in _options(command):
            shown = [o for o in option.opts if o not in getattr(option, "hidden_aliases", ())]
            assert "--out" not in shown and "--arch" not in shown, (path, shown)
            if option.name == "output":
                assert shown == ["-o", "--output"], (path, shown)
                outputs.append(path)
            if option.name == "net":
                assert shown == ["--net"], (path, shown)
    assert sorted(outputs) == ["data synth", "export", "rejudge", "teachers pack", "train"]


def test_top_level_help_shows_whole_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    from kdtune.cli import one_line

    for args, prefix in ((["--help"], ""), (["teachers", "--help"], "teachers "),
                         (["data", "--help"], "data ")):  # fmt: skip
        code, out, _ = run(args, capsys)
        assert code == 0
        flat = " ".join(out.split("Commands:")[1].split())
        assert "..." not in flat
        for path, command in _commands():
            if path.startswith(prefix) and " " not in path[len(prefix) :]:
                line = one_line(command)
                assert len(line) > 20 and line in flat, (path, line)


def test_models_and_teachers_list_are_tables_or_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["models"], capsys)
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["net", "parameters", "role"]
    code, out, _ = run(["models", "--format", "json"], capsys)
    assert code == 0
    assert [row["params"] for row in json.loads(out)] == [4_091_698, 657_817, 111_769]
    code, out, _ = run(["teachers", "list", "--format", "json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert [(row["arch"], row["data"]) for row in rows] == [
        ("teacher", "synthetic-v3"),
        ("med", "synthetic-v3"),
        ("med", "synthetic-v3-cocolike-v1-5e6c75a0ca67"),  # its own med, for its default rates
    ]
    code, out, _ = run(["teachers", "list"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["net", "data", "val", "AP", "test", "AP", "weights"]
    for row, line in zip(rows, lines[1:4], strict=True):
        # the table rounds to 3 places; the JSON keeps the measured value
        assert line.split()[:4] == [
            row["arch"], row["data"], f"{row['val/ap']:.3f}", f"{row['test/ap']:.3f}"
        ]  # fmt: skip
        assert f"{row['arch']}: produced by {row['produced_by']}" in out


def test_old_spellings_still_parse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # --out (now -o/--output) and --arch (now --net): refused for what they name, not for
    # their spelling
    code, _, err = run(
        ["teachers", "pack", str(tmp_path / "norun"), "--out", str(tmp_path)], capsys
    )
    assert_one_line_error(code, err, "norun")
    code, _, err = run(["eval", str(tmp_path / "none.pt"), "--arch", "tiny"], capsys)
    assert_one_line_error(code, err, "none.pt")


def test_dry_run_refuses_a_data_root_or_teacher_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml").read_text()
    missing = tmp_path / "no" / "coco"
    space = tmp_path / "mine.yaml"
    mine = re.sub(r"(?m)^data: .*$", f"data: {missing}", text)
    assert mine != text
    space.write_text(mine)
    for command in (["search", str(space), "--dry-run"], ["validate", str(space)]):
        code, out, err = run(command, capsys)
        assert_one_line_error(code, err, "mine.yaml", "data: no such folder", "no/coco")
        assert out == ""
    missing.mkdir(parents=True)  # a folder without the train split's annotations: refused
    code, out, err = run(["search", str(space), "--dry-run"], capsys)
    assert_one_line_error(code, err, "mine.yaml", "annotation file", "train2017.json")
    from kdtune.data.synth import write_synthetic

    write_synthetic(missing, n_train=4, n_val=2, n_test=2, seed=0)  # a COCO root: described
    code, out, err = run(["search", str(space), "--dry-run"], capsys)
    assert code == 0, err
    assert str(missing) in out


def test_rejudge_names_a_missing_space_file_or_output_folder_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdtune.results import SEARCH_FILE, SearchResult

    results = tmp_path / "results"
    (results / "done").mkdir(parents=True)
    stored = SearchResult(name="done", space_file=str(tmp_path / "gone.yaml"), results_dir="x")
    stored.save(results / "done" / SEARCH_FILE)
    before = (results / "done" / SEARCH_FILE).read_bytes()
    code, _, err = run(["rejudge", "done", "--results", str(results)], capsys)
    assert_one_line_error(code, err, "gone.yaml", "--space")
    space = tmp_path / "s.yaml"
    space.write_text("name: done\n")
    out = tmp_path / "nofolder" / "v.json"
    code, _, err = run(
        ["rejudge", "done", "--results", str(results), "--space", str(space), "-o", str(out)],
        capsys,
    )
    assert_one_line_error(code, err, "nofolder")
    assert (results / "done" / SEARCH_FILE).read_bytes() == before  # nothing stored changed

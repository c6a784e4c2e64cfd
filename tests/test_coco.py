"""Your own COCO data: a public-layout teacher fed the size it was trained at (a contradiction
refused), the held-out carve of train (never trained on, judged on by export), what
``--dry-run`` checks and estimates, and the guide (docs/coco.md) run end to end on the real
COCO mini set with tiny budgets."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from kdtune.config import TrainConfig
from kdtune.data.sources import (
    DEFAULT_HOLDOUT_FRACTION,
    HOLDOUT_SEED,
    carve,
    check_holdout_fraction,
    resolve_data,
)
from kdtune.errors import KdtuneError
from kdtune.models import build_model, settle_teacher_input_size, trained_input_size

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def public_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained teacher saved in the public Lightweight-OpenPose layout (a ``state_dict``,
    no kdtune ``arch``), as tests/test_train.py builds it."""
    path = tmp_path_factory.mktemp("public") / "checkpoint_iter_370000.pth"
    torch.save({"state_dict": build_model("teacher").state_dict(), "iter": 370000}, path)
    return path


def coco_space(stem: str, root: Path, teacher: Path, out: Path, **train: object) -> Path:
    """The provided space file ``stem`` pointed at ``root`` and ``teacher``, its other settings
    kept (``train`` entries override)."""
    raw = yaml.safe_load((SPACES / f"{stem}.yaml").read_text())
    raw["data"], raw["teacher"]["checkpoint"] = str(root), str(teacher)
    raw["train"].update(train)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


# ----------------------------------------------------------------------------- input size


def test_a_public_layout_checkpoint_is_fed_368_and_kdtunes_own_its_recorded_size(
    public_teacher: Path, tmp_path: Path
) -> None:
    assert trained_input_size(public_teacher)[0] == 368
    own = tmp_path / "model.pt"
    torch.save({"arch": "med", "model": {}, "config": {"input_size": 96}}, own)
    assert trained_input_size(own)[0] == 96
    settled = settle_teacher_input_size(TrainConfig(level="first"), public_teacher)
    assert TrainConfig().teacher_input_size == "auto" and settled.teacher_input_size == 368
    same = TrainConfig(level="first", teacher_input_size=368)
    assert settle_teacher_input_size(same, public_teacher) is same
    wrong = TrainConfig(level="first", teacher_input_size=256)
    with pytest.raises(KdtuneError, match=r"256 contradicts .* trained at 368\); give 368"):
        settle_teacher_input_size(wrong, public_teacher)


def test_train_refuses_a_teacher_input_size_the_checkpoint_contradicts(
    public_teacher: Path, minipose: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    code, _, err = run_cli(
        ["train", "--level", "first", "--teacher", str(public_teacher), "--data", str(minipose),
         "--teacher-input-size", "256", "--epochs", "1", "-o", str(run),
         "--results", str(tmp_path / "results")],
        capsys,
    )  # fmt: skip
    one_line_error(code, err, "teacher_input_size: 256 contradicts", "trained at 368")
    assert not (run / "model.pt").exists()
    code, _, err = run_cli(
        ["eval", str(public_teacher), "--net", "teacher", "--data", str(minipose),
         "--teacher-input-size", "128", "--results", str(tmp_path / "results")],
        capsys,
    )  # fmt: skip
    one_line_error(code, err, "--teacher-input-size: 128 contradicts", "give 368")


# ----------------------------------------------------------------------------- the carve


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)))
def test_a_holdout_fraction_is_in_zero_to_a_half(value: float) -> None:
    inside = math.isfinite(value) and 0 < value <= 0.5
    if inside:
        assert check_holdout_fraction(value, "f") == float(value)
    else:
        with pytest.raises(KdtuneError, match=r"in \(0, 0.5\]"):
            check_holdout_fraction(value, "f")


def test_the_carve_is_fixed_nested_and_never_trained_on(minipose: Path, tmp_path: Path) -> None:
    small, large = carve(str(minipose), 0.1), carve(str(minipose), 0.3)
    assert small == carve(str(minipose), 0.1) and small.seed == HOLDOUT_SEED  # fixed
    assert (len(small.held), len(large.held)) == (3, 9)  # round(f · 30)
    assert set(small.held) <= set(large.held)  # a smaller carve lies inside a larger one
    assert not set(large.held) & set(large.kept) and len(large.kept) + 9 == 30
    train = resolve_data(str(minipose), "train", 128, tmp_path, holdout=0.3)
    held = resolve_data(str(minipose), "holdout", 128, tmp_path, holdout=0.3)
    assert sorted(held.image_ids.tolist()) == list(large.held)
    assert not set(train.image_ids.tolist()) & set(large.held)
    assert len(train) == 21 and held.split == "holdout"
    assert held.ann_file.endswith("person_keypoints_train2017.json")  # scored on train's labels


def test_a_coco_space_without_test_keypoints_carves_every_trial(
    minipose: Path, public_teacher: Path, tmp_path: Path
) -> None:
    from kdtune.space import load_space

    raw = yaml.safe_load((SPACES / "coco_first_level.yaml").read_text())
    raw["data"] = str(minipose)
    del raw["train"]["holdout_fraction"]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    assert load_space(tmp_path / "s.yaml").trial_config()["holdout_fraction"] == (
        DEFAULT_HOLDOUT_FRACTION
    )
    raw["data"] = "synthetic"  # it has a test split: nothing carved
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    assert load_space(tmp_path / "s.yaml").trial_config()["holdout_fraction"] == 0.0


# ----------------------------------------------------------------------------- --dry-run


def test_dry_run_says_input_carve_what_is_trained_first_and_the_disk(
    minipose: Path, public_teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    first = coco_space("coco_first_level", minipose, public_teacher, tmp_path / "first.yaml")
    code, out, err = run_cli(["search", str(first), "--dry-run", "--results", str(results)], capsys)
    assert code == 0, err
    assert "the teacher is fed 368×368 (auto; its checkpoint: public layout" in out
    assert "held out   0.1 of train: 3 images" in out
    assert "nothing to train first" in out
    # 27 training images at K = 8 views of 57 maps of 16 × 16 float16, and 60 decoded images
    assert "1 teacher bank 6.3 MB (27 images × 8 views × 29 KB)" in out
    assert "data caches 3.9 MB (60 images at 128×128)" in out
    # a second level with no med: a teacher, then a med are trained first; the rate is the one
    # a teacher trained before under this results folder measured
    summary = results / "cache" / "teachers" / "teacher-x" / "run" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"arch": "teacher", "images_per_s": 50.0}))
    raw = yaml.safe_load((SPACES / "coco_second_level.yaml").read_text())
    raw["data"], raw["teacher"] = str(minipose), {"epochs": 20}
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump(raw))
    command = ["search", str(second), "--dry-run", "--results", str(results)]
    code, out, err = run_cli(command, capsys)
    assert code == 0, err
    before = [line for line in out.splitlines() if line.startswith("  before")]
    # 27 images × 20 epochs at 50 img/s = 10.8 s
    assert before[0].startswith("  before     kdtune trains a teacher net (teacher level, 20 ")
    assert "about 11 s at 50 img/s (measured by" in before[0]
    assert before[1].startswith("  before     kdtune trains a med net (first level, 20 epochs")
    assert "2 teacher banks" in out  # the med's own and the search's


def test_dry_run_refuses_missing_roots_and_a_contradicted_input_size(
    minipose: Path, public_teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (coco_space("coco_first_level", tmp_path / "nope", public_teacher, tmp_path / "a.yaml"),
         ("a.yaml", "data: no such folder", "nope")),
        (coco_space("coco_first_level", minipose, tmp_path / "none.pth", tmp_path / "b.yaml"),
         ("b.yaml", "teacher.checkpoint: no such file", "none.pth")),
        (coco_space("coco_first_level", minipose, public_teacher, tmp_path / "c.yaml",
                    teacher_input_size=256),
         ("c.yaml", "teacher_input_size: 256 contradicts", "trained at 368")),
        (coco_space("coco_first_level", minipose, public_teacher, tmp_path / "d.yaml",
                    holdout_fraction=0.75),
         ("d.yaml", "holdout_fraction", "(0, 0.5]")),
    ]  # fmt: skip
    for space, needles in cases:
        code, out, err = run_cli(["search", str(space), "--dry-run"], capsys)
        one_line_error(code, err, *needles)
        assert out == ""
    half = tmp_path / "half"  # a root with images but no train annotations
    (half / "annotations").mkdir(parents=True)
    space = coco_space("coco_first_level", half, public_teacher, tmp_path / "e.yaml")
    code, _, err = run_cli(["search", str(space), "--dry-run"], capsys)
    one_line_error(code, err, "annotation file", "person_keypoints_train2017.json")


@pytest.mark.parametrize("fraction", ["0", "0.75", "-0.1", "nan"])
def test_export_refuses_a_fraction_outside_zero_to_a_half(
    fraction: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        ["export", "any", "--holdout-fraction", fraction, "-o", str(tmp_path / "best.yaml"),
         "--results", str(tmp_path)],
        capsys,
    )  # fmt: skip
    one_line_error(code, err, "--holdout-fraction", "(0, 0.5]")
    assert not (tmp_path / "best.yaml").exists()


# ----------------------------------------------------------------------------- the guide


def banks(results: Path) -> list[tuple[int, int]]:
    """(teacher input size, training images) of each teacher bank built under ``results``."""
    found = []
    for manifest in sorted((results / "cache" / "banks").glob("*/bank.json")):
        spec = json.loads(manifest.read_text())["spec"]
        found.append((spec["teacher_input_size"], spec["images"]))
    return found


@pytest.mark.slow
def test_the_coco_guide_end_to_end(
    minipose: Path, public_teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/coco.md's steps on the 60-image COCO mini set: check the data, evaluate the public
    checkpoint at 368, search the first level, train the chosen med, search the second level,
    export with the held-out verdict on the carve of train2017.

    Tiny budgets; the untrained public-layout teacher scores no AP, so its students are ranked
    by validation loss here (a teacher no better than its students withholds an AP
    recommendation) and the confirmation stage is left out."""
    results = tmp_path / "results"
    common = ["--results", str(results)]

    def kdtune(*args: str) -> str:
        code, out, err = run_cli([*args, *common], capsys)
        assert code == 0, err
        return out

    # 1. the data: the decoded ground truth's AP, the best a net can reach
    ceiling = json.loads(kdtune("data", "ceiling", "--data", str(minipose)))
    assert ceiling["images"] == 30 and 0.3 < ceiling["val/ap"] <= 1.0
    # 2. the public checkpoint at its own input size (auto: 368)
    evaluated = json.loads(
        kdtune("eval", str(public_teacher), "--net", "teacher", "--data", str(minipose))
    )
    assert evaluated["net_input_size"] == 368 and evaluated["images"] == 30

    tiny = {
        "budget": {"num_samples": 2, "max_epochs": 1, "eval_every": 1, "max_concurrent": 1},
        "metric": "val/loss",
        "pruner": {"type": "none"},
    }
    train = {"batch_size": 8, "max_val_images": 10, "teacher_views": 2, "amp": False,
             "holdout_fraction": 0.3}  # fmt: skip

    def space(stem: str, teacher: Path) -> Path:
        path = coco_space(stem, minipose, teacher, tmp_path / f"{stem}.yaml", **train)
        raw = yaml.safe_load(path.read_text())
        raw.update(tiny)
        del raw["confirm"]
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        assert "Traceback" not in kdtune("search", str(path), "--dry-run")
        return path

    # 3. the first level: med from the public teacher
    first = space("coco_first_level", public_teacher)
    kdtune("search", str(first), "--no-progress")
    record = json.loads((results / "coco_first_level" / "search.json").read_text())
    assert {t["config"]["holdout_fraction"] for t in record["trials"]} == {0.3}
    # its teacher's bank: the public teacher fed 368, on the 21 training images left by the carve
    assert banks(results) == [(368, 21)]
    # 4. the chosen med, trained (its model.pt records its settings, the carve among them)
    kdtune("export", "coco_first_level", "--no-holdout", "-o", str(tmp_path / "med.yaml"))
    med = results / "runs" / "med"
    kdtune("train", "--config", str(tmp_path / "med.yaml"), "-o", str(med))
    trained = torch.load(med / "model.pt", weights_only=True)["config"]
    assert trained["holdout_fraction"] == 0.3 and trained["input_size"] == 128
    # 5. the second level: tiny from that med, then export with the held-out check
    second = space("coco_second_level", med / "model.pt")
    kdtune("search", str(second), "--no-progress")
    assert (128, 21) in banks(results)  # the med fed its own 128
    out = kdtune(
        "export", "coco_second_level", "-o", str(tmp_path / "tiny.yaml"), "--seeds", "1",
        "--bootstrap", "50",
    )  # fmt: skip
    assert re.search(r"held-out part: 9 train images \(0.3 of train, seed 2017\)", out), out
    assert "held-out verdict: " in out
    exported = yaml.safe_load((tmp_path / "tiny.yaml").read_text())
    holdout = exported["holdout"]
    assert holdout["split"] == "holdout" and holdout["carve"]["held_images"] == 9
    assert holdout["best"]["images"] == 9
    assert exported["train"]["holdout_fraction"] == 0.3  # export's runs never train on it

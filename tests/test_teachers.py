"""The teachers kdtune ships for its synthetic sources: when they are used, and what they
score."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import run_cli

from kdtune.config import TrainConfig
from kdtune.data.sources import SYNTHETIC_COCOLIKE
from kdtune.errors import KdtuneError
from kdtune.models import load_checkpoint
from kdtune.teachers import (
    annotations_digest,
    manifest,
    resolve,
    shipped_teacher,
    weights_path,
)

SHIPPED = [arch for arch in ("med", "teacher") if manifest(arch) is not None]
COCOLIKE_FOLDER = "synthetic-v3-cocolike-v1-5e6c75a0ca67"  # its defaults' cache folder


def test_kdtune_ships_a_teacher_for_each_level() -> None:
    """The med teacher of the second level, the Lightweight-OpenPose teacher of the first."""
    assert SHIPPED == ["med", "teacher"]


def no_training(*_args: object, **_kwargs: object) -> dict[str, object]:
    raise AssertionError("a teacher was trained although one is shipped")


def test_the_first_level_uses_the_shipped_lightweight_openpose_teacher() -> None:
    lines: list[str] = []
    path = resolve(TrainConfig(level="first"), None, lines.append, fit=no_training)
    assert path == weights_path("teacher")
    teacher = load_checkpoint(path, "teacher")
    assert sum(p.numel() for p in teacher.parameters()) == 4_091_698
    assert any("shipped teacher" in line for line in lines), lines


@pytest.mark.parametrize("arch", SHIPPED)
def test_shipped_weights_are_float16_with_a_complete_record(arch: str) -> None:
    state = torch.load(weights_path(arch), map_location="cpu", weights_only=True)
    assert state["arch"] == arch
    assert all(v.dtype == torch.float16 for v in state["model"].values() if v.is_floating_point())
    record = manifest(arch)
    assert record is not None
    assert record["produced_by"].startswith("kdtune train --config kdtune/teachers/")
    assert TrainConfig.from_dict(record["train"]).data == "synthetic"
    assert len(record["data"]["train_annotations_sha256"]) == 64
    for split in ("val", "test"):
        assert 0.0 < record[split][f"{split}/ap"] <= 1.0


def test_auto_uses_the_shipped_teacher_without_training() -> None:
    lines: list[str] = []
    path = resolve(TrainConfig(level="second"), None, lines.append, fit=no_training)
    assert path == weights_path("med")
    teacher = load_checkpoint(path, "med")
    assert sum(p.numel() for p in teacher.parameters()) == 657_817
    assert any("shipped med" in line for line in lines)


def test_shipped_teacher_is_refused_where_it_does_not_fit(tmp_path: Path) -> None:
    cfg = TrainConfig(level="second")
    assert shipped_teacher("med", cfg)[0] is not None
    for change, value, words in (
        ("data", str(tmp_path), "ships teachers for synthetic, synthetic-cocolike only"),
        ("sigma", 5.0, "sigma 7.0"),
        ("stride", 4, "stride 8"),
    ):
        path, why = shipped_teacher("med", replace(cfg, **{change: value}))
        assert path is None and words in why
    with pytest.raises(KdtuneError, match=r"teacher_recipe: shipped: .*synthetic-cocolike only"):
        resolve(
            replace(cfg, data=str(tmp_path), teacher_recipe="shipped"), None, print, fit=no_training
        )


def test_the_cocolike_variant_has_its_own_shipped_med() -> None:
    """Trained on the variant's defective labels at its default rates; handed out only for
    those rates (another rate is another training set)."""
    cfg = TrainConfig(level="second", data=SYNTHETIC_COCOLIKE)
    lines: list[str] = []
    path = resolve(cfg, None, lines.append, fit=no_training)
    assert path == weights_path("med", SYNTHETIC_COCOLIKE) != weights_path("med")
    assert any("shipped med net for synthetic-cocolike" in line for line in lines), lines
    record = manifest("med", SYNTHETIC_COCOLIKE)
    assert record is not None and record["data"]["version"] == COCOLIKE_FOLDER
    assert record["produced_by"].startswith(
        "kdtune train --config kdtune/teachers/synthetic-cocolike/med.json"
    )
    assert TrainConfig.from_dict(record["train"]).data == SYNTHETIC_COCOLIKE
    # the same rates spelled out fit; another rate does not
    spelled = replace(cfg, data=f"{SYNTHETIC_COCOLIKE}:unlabelled_joints=0.15")
    assert shipped_teacher("med", spelled)[0] == path
    other = replace(cfg, data=f"{SYNTHETIC_COCOLIKE}:unlabelled_joints=0.3")
    none, why = shipped_teacher("med", other)
    assert none is None and "this run's data is synthetic-v3-cocolike-v1-" in why
    # no Lightweight-OpenPose teacher is shipped for it: the first level trains its own
    none, why = shipped_teacher("teacher", replace(cfg, level="first"))
    assert none is None and why == "kdtune ships no teacher net for synthetic-cocolike"


def test_teachers_list_names_each_shipped_teacher(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["teachers", "list", "--format", "json"], capsys)
    rows = json.loads(out)
    assert code == 0
    assert sorted((r["arch"], r["data"]) for r in rows) == sorted(
        [(arch, "synthetic-v3") for arch in SHIPPED] + [("med", COCOLIKE_FOLDER)]
    )
    assert all(r["val/ap"] > 0 for r in rows)


def test_pack_refuses_a_folder_without_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["teachers", "pack", str(tmp_path), "--out", str(tmp_path)], capsys)
    assert code == 2 and err.strip() == f"error: teachers pack: no model.pt in {tmp_path}"


@pytest.mark.slow
@pytest.mark.parametrize("arch", SHIPPED)
def test_shipped_teacher_scores_as_recorded_on_the_synthetic_default(
    arch: str, tmp_path: Path
) -> None:
    """Fails if the synthetic generator (or the evaluation) has changed under the weights."""
    from kdtune.api import evaluate_checkpoint
    from kdtune.data.sources import SYNTHETIC, data_root

    record = manifest(arch)
    assert record is not None
    root = data_root(SYNTHETIC, tmp_path)
    assert annotations_digest(root) == record["data"]["train_annotations_sha256"]
    got = evaluate_checkpoint(weights_path(arch), arch, SYNTHETIC, "val", results=tmp_path)
    assert got["val/ap"] == pytest.approx(record["val"]["val/ap"], abs=0.005)
    assert got["val/ap"] >= 0.5
    if arch == "teacher":
        med = manifest("med")
        assert med is not None and got["val/ap"] >= med["val"]["val/ap"]


@pytest.mark.slow
def test_the_cocolike_med_scores_as_recorded(tmp_path: Path) -> None:
    from kdtune.api import evaluate_checkpoint
    from kdtune.data.sources import data_root

    record = manifest("med", SYNTHETIC_COCOLIKE)
    assert record is not None
    root = data_root(SYNTHETIC_COCOLIKE, tmp_path)
    assert annotations_digest(root) == record["data"]["train_annotations_sha256"]
    weights = weights_path("med", SYNTHETIC_COCOLIKE)
    got = evaluate_checkpoint(weights, "med", SYNTHETIC_COCOLIKE, "val", results=tmp_path)
    assert got["val/ap"] == pytest.approx(record["val"]["val/ap"], abs=0.005)


@pytest.mark.parametrize(("teacher_ap", "warned"), [(0.58, False), (0.30, True), (0.31, True)])
def test_a_search_whose_teacher_is_no_better_than_its_best_student_says_so(
    teacher_ap: float, warned: bool
) -> None:
    from kdtune.api import SearchOutcome
    from kdtune.results import COMPLETE, SearchResult, TrialRecord

    trial = TrialRecord("t1", COMPLETE, {}, history=[{"epoch": 1, "val/ap": 0.31}])
    result = SearchResult("s", "s.yaml", "/tmp/s", trials=[trial])
    outcome = SearchOutcome(result, None, "sqlite://", None, teacher_ap)
    warning = outcome.teacher_warning()
    assert (warning is not None) == warned
    if warned:
        assert warning is not None and f"val AP {teacher_ap:.3f}" in warning and "0.310" in warning
    assert SearchOutcome(result, None, "sqlite://", None, None).teacher_warning() is None

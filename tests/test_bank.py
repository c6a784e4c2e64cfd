"""The teacher bank: exact maps per augmented view, shared views, and refusals of a bank or
teacher that does not fit."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import small_config

from kdtune.augment import apply
from kdtune.bank import TeacherBank, build_bank, open_or_build, run_teacher, view_affines
from kdtune.config import TrainConfig
from kdtune.data.coco import load_split
from kdtune.errors import KdtuneError
from kdtune.models import build_model, weights_digest
from kdtune.teachers import teacher_key
from kdtune.teachers.runs import bank_spec, teacher_at_grid
from kdtune.train import fit

VIEWS = 3


def small(synth_root: Path, **over: Any) -> TrainConfig:
    sizes = {"epochs": 1, "max_train_images": 12, "max_val_images": 4, "teacher_views": VIEWS}
    return small_config(synth_root, **{**sizes, **over})


def med_teacher(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("med").eval()


@pytest.fixture(scope="module")
def banked(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A bank of a random med teacher over 12 images × 3 views."""
    cfg = small(synth_root)
    data = load_split(synth_root, "train", 128, tmp_path_factory.mktemp("cache"), max_images=12)
    net = teacher_at_grid(med_teacher(), cfg)
    spec = bank_spec(cfg, len(data), weights_digest(net), "test-data")
    root = tmp_path_factory.mktemp("banks") / "bank"
    bank = build_bank(net, data, spec, root, device=torch.device("cpu"), batch_size=5)
    return {"cfg": cfg, "data": data, "net": net, "spec": spec, "bank": bank}


def test_bank_maps_are_the_teacher_on_the_augmented_image(banked: dict[str, Any]) -> None:
    data, net, spec, bank = banked["data"], banked["net"], banked["spec"], banked["bank"]
    affines = view_affines(spec)
    for image, view in [(0, 0), (5, 2), (11, 1)]:
        row = image * spec.views + view
        x, _, _ = apply(
            data.images[image : image + 1],
            data.keypoints[image : image + 1],
            data.masks[image : image + 1],
            affines[row],
        )
        heat, paf = run_teacher(net, x, spec.grid, amp=False)
        got_heat, got_paf = bank.maps(torch.tensor([image]), torch.tensor([view]), heat.device)
        # float16 storage: relative rounding of 2^-11, plus a little batch-size noise
        torch.testing.assert_close(got_heat, heat, rtol=2e-3, atol=2e-4)
        torch.testing.assert_close(got_paf, paf, rtol=2e-3, atol=2e-4)
        assert heat.abs().max() > 1e-3  # the comparison has something in it


def test_live_targets_on_a_bank_view_agree_with_the_bank(banked: dict[str, Any]) -> None:
    """What the trial does in live mode, fed the bank's own view, gives the bank's maps."""
    data, net, bank = banked["data"], banked["net"], banked["bank"]
    index, view = torch.tensor([3, 7, 2, 9]), torch.tensor([2, 0, 1, 1])
    affine = bank.views(index, view)
    x, _, _ = apply(data.images[index], data.keypoints[index], data.masks[index], affine)
    live_heat, live_paf = run_teacher(net, x, bank.spec.grid, amp=False)
    heat, paf = bank.maps(index, view, torch.device("cpu"))
    torch.testing.assert_close(heat, live_heat, rtol=2e-3, atol=2e-4)
    torch.testing.assert_close(paf, live_paf, rtol=2e-3, atol=2e-4)


def test_views_differ_between_views_and_images(banked: dict[str, Any]) -> None:
    bank = banked["bank"]
    m = bank.matrix  # [N, K, 2, 3]
    assert m.shape == (12, VIEWS, 2, 3)
    assert not torch.allclose(m[0, 0], m[0, 1])
    assert not torch.allclose(m[0, 0], m[1, 0])
    # and the views are a fixed function of the spec: the same numbers again
    again = view_affines(banked["spec"]).matrix.reshape(12, VIEWS, 2, 3)
    assert torch.equal(again, m)


def test_bank_refuses_another_teacher_or_data(banked: dict[str, Any]) -> None:
    bank, spec = banked["bank"], banked["spec"]
    other_teacher = weights_digest(teacher_at_grid(med_teacher(seed=1), banked["cfg"]))
    with pytest.raises(KdtuneError, match="teacher weights"):
        bank.check(replace(spec, teacher=other_teacher))
    with pytest.raises(KdtuneError, match="data set"):
        bank.check(replace(spec, data="another"))
    with pytest.raises(KdtuneError, match="views per image"):
        bank.check(replace(spec, views=VIEWS + 1))
    assert bank.check(spec) is bank


def test_a_folder_that_is_not_a_bank_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KdtuneError, match=r"no bank\.json"):
        TeacherBank(tmp_path)
    (tmp_path / "bank.json").write_text(json.dumps({"spec": {}}))
    with pytest.raises(KdtuneError, match="not a complete bank"):
        TeacherBank(tmp_path)


def test_teacher_whose_maps_miss_the_grid_is_refused() -> None:
    net = med_teacher()  # 128 px in, 16 x 16 maps out; asked for 8 x 8
    with pytest.raises(KdtuneError, match=r"the student needs \[19, 8, 8\]"):
        run_teacher(net, torch.zeros(2, 3, 128, 128), grid=8, amp=False)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("teacher_views", 0, "teacher_views: must be a positive integer"),
        ("teacher_views", -3, "teacher_views: must be a positive integer"),
        ("teacher_input_size", 100, "must be a multiple of stride 8"),
        ("teacher_targets", "blurred", "teacher_targets: one of bank, live, warped"),
    ],
)
def test_bad_bank_settings_are_refused(key: str, value: Any, message: str) -> None:
    with pytest.raises(KdtuneError, match=message):
        TrainConfig.from_dict({key: value})


def test_open_or_build_builds_once_and_reopens(banked: dict[str, Any], tmp_path: Path) -> None:
    data, net, spec = banked["data"], banked["net"], banked["spec"]
    lines: list[str] = []
    first = open_or_build(net, data, spec, tmp_path, device=torch.device("cpu"), log=lines.append)
    assert any("building the teacher bank" in line for line in lines)
    assert any("views/s" in line for line in lines)  # progress while it builds
    lines.clear()
    again = open_or_build(net, data, spec, tmp_path, device=torch.device("cpu"), log=lines.append)
    assert lines == [] and again.root == first.root
    assert (again.heat[:] == first.heat[:]).all()


def test_trial_with_each_kind_of_targets(synth_root: Path, tmp_path: Path) -> None:
    teacher = tmp_path / "med.pt"
    torch.save({"arch": "med", "model": med_teacher().state_dict()}, teacher)
    aps = {}
    for targets in ("bank", "live", "warped"):
        cfg = small(synth_root, teacher_checkpoint=str(teacher), teacher_targets=targets)
        summary = fit(cfg, None, workdir=tmp_path / targets, results=tmp_path)
        aps[targets] = summary["final"]["val/loss"]
    assert len(list((tmp_path / "cache" / "banks").glob("*/bank.json"))) == 1
    assert all(v > 0 for v in aps.values())


def test_given_bank_for_other_data_is_refused(
    banked: dict[str, Any], synth_root: Path, tmp_path: Path
) -> None:
    teacher = tmp_path / "med.pt"
    torch.save({"arch": "med", "model": med_teacher().state_dict()}, teacher)
    cfg = small(synth_root, teacher_checkpoint=str(teacher), teacher_bank=str(banked["bank"].root))
    with pytest.raises(KdtuneError, match="data set: built for 'test-data'"):
        fit(cfg, None, workdir=tmp_path / "run", results=tmp_path)


def test_alpha_one_trains_on_the_banks_views(synth_root: Path, tmp_path: Path) -> None:
    """A ground-truth-only trial sees the same K views per image as its distilled rivals."""
    from kdtune.teacher_targets import BankViews, open_targets
    from kdtune.train import needs_teacher

    cfg = small(synth_root, schedule="fixed:0")
    assert not needs_teacher(cfg)
    data = load_split(synth_root, "train", 128, tmp_path, max_images=12)
    targets = open_targets(cfg, None, data, torch.device("cpu"), tmp_path, lambda _m: None)
    assert isinstance(targets, BankViews) and targets.bank is None
    spec = bank_spec(cfg, 12)
    assert torch.equal(targets.table.matrix, view_affines(spec).matrix)
    targets.new_epoch(12, torch.Generator().manual_seed(0))
    idx = torch.tensor([3, 7])
    assert targets.maps(idx, torch.zeros(2, 3, 128, 128), targets.views(idx, 0)) is None


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("lr", 1e-3),
        ("seed", 7),
        ("weight_decay", 1e-4),
        ("aug_rotate", 10.0),
        ("aug_scale", (0.9, 1.1)),
        ("aug_flip", 0.0),
        ("amp", True),
        ("teacher_input_size", 368),
        ("teacher_recipe", "reference"),
        ("teacher_epochs", 3),
        ("batch_size", 4),
        ("max_train_images", 24),
        ("sigma", 5.0),
    ],
)
def test_teacher_cache_key_covers_what_shapes_a_teacher(
    synth_root: Path, change: str, value: Any
) -> None:
    cfg = small(synth_root, level="first")
    assert teacher_key(replace(cfg, **{change: value}), None) != teacher_key(cfg, None)


def test_teacher_cache_key_ignores_how_it_runs(synth_root: Path) -> None:
    cfg = small(synth_root)
    for change, value in (("num_threads", 2), ("eval_every", 3), ("max_val_images", 9)):
        assert teacher_key(replace(cfg, **{change: value}), None) == teacher_key(cfg, None)


def test_a_bank_held_in_memory_gives_the_memory_mapped_maps(banked: dict[str, Any]) -> None:
    """A bank copied into a device's memory (as on a GPU) gathers the very maps it stores."""
    bank = TeacherBank(banked["bank"].root)
    cpu = torch.device("cpu")
    index, view = torch.tensor([3, 7, 2, 9, 3]), torch.tensor([2, 0, 1, 1, 0])
    mapped = bank.maps(index, view, cpu)
    assert not bank.resident_on(cpu)  # a CPU keeps the memory map, shared between processes
    bank.hold_on(cpu)
    held = bank.maps(index, view, cpu)
    for a, b in zip(mapped, held, strict=True):
        assert a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b) and a.abs().max() > 1e-3

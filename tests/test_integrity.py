"""Integrity under faults, one cache or input at a time: damaged and malformed inputs named in
one line each, every cache checked against its manifest when opened (rebuilt or refused, never
trained on), a full disk mid-write leaving the previous state loadable, a teacher that diverges.

The whole search with a fault in each stage is in ``tests/test_faults.py``."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import run_cli, small_config

from kdtune import bank as bank_mod
from kdtune import checkpoints
from kdtune.bank import open_or_build
from kdtune.config import TrainConfig
from kdtune.data import coco as coco_mod
from kdtune.data.coco import load_split
from kdtune.errors import DiskFull, KdtuneError, TeacherDiverged, TrialDiverged
from kdtune.models import build_model, weights_digest
from kdtune.teachers import source
from kdtune.teachers.runs import bank_spec, teacher_at_grid

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def _one_line(text: str) -> None:
    assert "\n" not in text.strip() and "Traceback" not in text


# ----------------------------------------------------------------------------- inputs


def _tiny_coco(minipose: Path, dst: Path, n: int) -> tuple[Path, dict[str, Any]]:
    doc = json.loads((minipose / "annotations" / "person_keypoints_train2017.json").read_text())
    doc["images"] = sorted(doc["images"], key=lambda im: im["id"])[:n]
    keep = {im["id"] for im in doc["images"]}
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
    (dst / "annotations").mkdir(parents=True)
    (dst / "train2017").mkdir()
    for im in doc["images"]:
        shutil.copy(minipose / "train2017" / im["file_name"], dst / "train2017" / im["file_name"])
    _write_doc(dst, doc)
    return dst, doc


def _write_doc(root: Path, doc: dict[str, Any]) -> None:
    (root / "annotations" / "person_keypoints_train2017.json").write_text(json.dumps(doc))


def test_a_malformed_annotation_names_its_image_and_what_is_wrong(
    minipose: Path, tmp_path: Path
) -> None:
    root, doc = _tiny_coco(minipose, tmp_path / "coco", 4)
    victim = doc["annotations"][0]
    victim["keypoints"] = victim["keypoints"][:12]
    _write_doc(root, doc)
    image = next(im for im in doc["images"] if im["id"] == victim["image_id"])
    lines: list[str] = []
    ps = load_split(root, "train", 64, cache_dir=tmp_path / "cache", say=lines.append)
    assert (len(ps), ps.skipped) == (3, 1) and victim["image_id"] not in ps.image_ids.tolist()
    named, total = lines
    assert image["file_name"] in named and f"image id {image['id']}" in named
    assert f"annotation {victim['id']} has 12 keypoint values, not 51" in named
    assert "skipped 1 of 4" in total


def test_a_wrongly_sized_image_is_named_with_both_sizes(minipose: Path, tmp_path: Path) -> None:
    root, doc = _tiny_coco(minipose, tmp_path / "coco", 3)
    doc["images"][2]["width"] += 7
    _write_doc(root, doc)
    lines: list[str] = []
    load_split(root, "train", 64, cache_dir=tmp_path / "cache", say=lines.append)
    w, h = doc["images"][2]["width"], doc["images"][2]["height"]
    assert f"is {w - 7}x{h} pixels, its annotation says {w}x{h}" in lines[0]


def test_a_split_left_with_too_few_images_is_refused_in_one_line(
    minipose: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three of four images broken: each named, then one error line, exit code 2."""
    root, doc = _tiny_coco(minipose, tmp_path / "coco", 4)
    shutil.copytree(root / "train2017", root / "val2017")
    (root / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(doc))
    for im in doc["images"][:3]:
        (root / "val2017" / im["file_name"]).write_bytes(b"\xff\xd8 not a jpeg")
    code, _out, err = run_cli(
        ["data", "ceiling", "--data", str(root), "--results", str(tmp_path / "r")], capsys
    )
    lines = err.strip().splitlines()
    assert code == 2, err
    assert [line.startswith("data: skipped") for line in lines] == [True] * 4 + [False]
    assert lines[-1].startswith("error: data: only 1 of the 4 images") and "too few" in lines[-1]
    assert "Traceback" not in err and "Warning" not in err


# ----------------------------------------------------------------------------- data cache


def test_a_damaged_data_cache_is_said_and_decoded_again(synth_root: Path, tmp_path: Path) -> None:
    """Loadable, but its pixels changed: the digest catches it, never trained on."""
    first = load_split(synth_root, "val", 32, cache_dir=tmp_path, max_images=3)
    (cached,) = tmp_path.glob("*.pt")
    blob = torch.load(cached, weights_only=True)
    blob["images"][0, 0, 0, 0] ^= 0xFF
    torch.save(blob, cached)
    lines: list[str] = []
    again = load_split(synth_root, "val", 32, cache_dir=tmp_path, max_images=3, say=lines.append)
    assert len(lines) == 1 and "is damaged (its tensors' SHA-256 differs" in lines[0]
    assert torch.equal(again.images, first.images)
    quiet: list[str] = []  # the rewritten cache is whole again
    load_split(synth_root, "val", 32, cache_dir=tmp_path, max_images=3, say=quiet.append)
    assert quiet == []


def test_a_data_cache_with_shapes_that_disagree_is_decoded_again(
    synth_root: Path, tmp_path: Path
) -> None:
    load_split(synth_root, "val", 32, cache_dir=tmp_path, max_images=3)
    (cached,) = tmp_path.glob("*.pt")
    blob = torch.load(cached, weights_only=True)
    blob["masks"] = blob["masks"][:2]
    torch.save(blob, cached)
    lines: list[str] = []
    assert (
        len(load_split(synth_root, "val", 32, cache_dir=tmp_path, max_images=3, say=lines.append))
        == 3
    )
    assert "masks is (2, 32, 32), expected (3, 32, 32)" in lines[0]


def test_a_full_disk_while_writing_the_data_cache_keeps_the_previous_one(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_split(synth_root, "val", 32, cache_dir=tmp_path, max_images=3)
    (cached,) = tmp_path.glob("*.pt")
    before = cached.read_bytes()
    real_save = torch.save

    def half_then_full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"PK\x03\x04 half of a file")
        raise ENOSPC

    monkeypatch.setattr(coco_mod.torch, "save", half_then_full)
    with pytest.raises(DiskFull) as caught:
        coco_mod._write_cache(cached, first)
    _one_line(str(caught.value))
    assert str(caught.value).startswith("disk full: writing the decoded split to ")
    assert "left as it was" in str(caught.value)
    monkeypatch.setattr(coco_mod.torch, "save", real_save)
    assert cached.read_bytes() == before and not list(tmp_path.glob(".*tmp"))
    lines: list[str] = []
    again = load_split(synth_root, "val", 32, cache_dir=tmp_path, max_images=3, say=lines.append)
    assert lines == [] and torch.equal(again.images, first.images)


# ----------------------------------------------------------------------------- bank


@pytest.fixture
def bank_parts(synth_root: Path, tmp_path: Path) -> dict[str, Any]:
    cfg = small_config(synth_root, max_train_images=6, teacher_views=2)
    data = load_split(synth_root, "train", 128, tmp_path / "data", max_images=6)
    torch.manual_seed(0)
    net = teacher_at_grid(build_model("med").eval(), cfg)
    spec = bank_spec(cfg, len(data), weights_digest(net), "test-data")
    return {"net": net, "data": data, "spec": spec, "cache": tmp_path / "cache"}


def _open(parts: dict[str, Any], lines: list[str]) -> bank_mod.TeacherBank:
    return open_or_build(
        parts["net"],
        parts["data"],
        parts["spec"],
        parts["cache"],
        device=torch.device("cpu"),
        log=lines.append,
    )


@pytest.mark.parametrize("damage", ["truncated maps", "changed affines", "no manifest"])
def test_a_damaged_bank_is_said_and_built_again(bank_parts: dict[str, Any], damage: str) -> None:
    built = _open(bank_parts, [])
    heat = np.array(built.heat)
    root = built.root
    del built
    if damage == "truncated maps":
        with (root / "heat.npy").open("r+b") as f:
            f.truncate((root / "heat.npy").stat().st_size - 100)
    elif damage == "changed affines":
        matrix = np.load(root / "matrix.npy")
        matrix[0, 0, 0, 0] += 1.0
        np.save(root / "matrix.npy", matrix)
    else:
        (root / "bank.json").unlink()
    lines: list[str] = []
    again = _open(bank_parts, lines)
    said = [line for line in lines if "building it again" in line]
    assert len(said) == 1, lines
    assert np.array_equal(np.array(again.heat), heat)
    assert bank_mod.TeacherBank(root).check(bank_parts["spec"]) is not None  # whole again


def test_a_damaged_bank_given_by_path_is_refused_in_one_line(bank_parts: dict[str, Any]) -> None:
    root = _open(bank_parts, []).root
    with (root / "paf.npy").open("r+b") as f:
        f.truncate(1000)
    with pytest.raises(KdtuneError, match=r"paf\.npy .* is damaged \(1000 bytes") as caught:
        bank_mod.TeacherBank(root)
    _one_line(str(caught.value))


def test_a_full_disk_while_building_a_bank_keeps_the_previous_one(
    bank_parts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bank is rebuilt (its manifest gone) on a disk that fills: the old files stay, one line."""
    root = _open(bank_parts, []).root
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    (root / "bank.json").rename(root / "bank.json.keep")

    def full(*args: Any, **kwargs: Any) -> None:
        raise ENOSPC

    monkeypatch.setattr(bank_mod.np, "save", full)  # the maps written, the affines not
    with pytest.raises(DiskFull) as caught:
        _open(bank_parts, [])
    _one_line(str(caught.value))
    assert "writing the teacher bank" in str(caught.value)
    monkeypatch.undo()
    assert not [p for p in root.parent.iterdir() if ".tmp" in p.name]  # nothing half-built
    (root / "bank.json.keep").rename(root / "bank.json")
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before
    bank_mod.TeacherBank(root).check(bank_parts["spec"])


def test_a_damaged_warped_maps_cache_is_said_and_computed_again(
    bank_parts: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The warped mode's cache of the teacher's maps: truncated, it is said and recomputed."""
    args = (bank_parts["net"], bank_parts["data"])
    kw: dict[str, Any] = {"key": ["k"], "device": torch.device("cpu"), "cache": bank_parts["cache"]}
    heat, paf = bank_mod.source_maps(*args, **kw)
    (cached,) = (bank_parts["cache"] / "teacher_maps").glob("*.pt")
    cached.write_bytes(cached.read_bytes()[:500])
    capsys.readouterr()
    again = bank_mod.source_maps(*args, **kw)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged (unreadable" in err and str(cached) in err
    assert torch.equal(again[0], heat) and torch.equal(again[1], paf)


# ----------------------------------------------------------------------------- teacher cache


def _fake_fit(calls: list[TrainConfig], payload: bytes = b"weights") -> Any:
    def fit(cfg: TrainConfig, report: None, *, workdir: Path, **_: Any) -> dict[str, Any]:
        calls.append(cfg)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "model.pt").write_bytes(payload * 100)
        return {}

    return fit


def test_a_damaged_teacher_cache_is_said_and_trained_again(
    synth_root: Path, tmp_path: Path
) -> None:
    cfg = small_config(synth_root, teacher_recipe="reference")
    calls: list[TrainConfig] = []
    path = source.trained_teacher(cfg, tmp_path, lambda _m: None, fit=_fake_fit(calls))
    assert source.trained_teacher(cfg, tmp_path, lambda _m: None, fit=_fake_fit(calls)) == path
    assert len(calls) == 1  # cached, checked, reused
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    lines: list[str] = []
    again = source.trained_teacher(cfg, tmp_path, lines.append, fit=_fake_fit(calls))
    assert len(calls) == 2 and again == path and source.teacher_damage(path) is None
    assert "is damaged (690 bytes, its manifest says 700)" in lines[0]
    path.write_bytes(b"x" * 700)  # same size, other bytes
    lines.clear()
    source.trained_teacher(cfg, tmp_path, lines.append, fit=_fake_fit(calls))
    assert len(calls) == 3 and "SHA-256 differs" in lines[0]


def test_a_teacher_that_diverges_is_one_line_naming_the_lr(
    synth_root: Path, tmp_path: Path
) -> None:
    cfg = small_config(synth_root, teacher_recipe="reference", lr=50.0)

    def diverging(*_a: Any, **_k: Any) -> dict[str, Any]:
        raise TrialDiverged("loss became nan at epoch 0, by step 2 (read every 1 steps)")

    with pytest.raises(TeacherDiverged) as caught:
        source.trained_teacher(cfg, tmp_path, lambda _m: None, fit=diverging)
    line = str(caught.value)
    _one_line(line)
    assert "diverged (loss became nan at epoch 0" in line and "at lr 50" in line
    assert "lower `lr`" in line and isinstance(caught.value, KdtuneError)


# ----------------------------------------------------------------------------- checkpoints


def _trainee(synth_root: Path) -> checkpoints.Trainee:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    return checkpoints.Trainee(
        arch="tiny",
        cfg=small_config(synth_root),
        model=net,
        optimizer=opt,
        lr_schedule=torch.optim.lr_scheduler.LambdaLR(opt, lambda _e: 1.0),
        generator=torch.Generator().manual_seed(0),
    )


def test_a_damaged_checkpoint_is_refused_in_one_line(synth_root: Path, tmp_path: Path) -> None:
    trainee = _trainee(synth_root)
    ckpt = checkpoints.write(trainee, tmp_path, 1, [{"val/ap": 0.1}])
    assert checkpoints.restore(trainee, ckpt, torch.device("cpu"))[1] == 2
    state = ckpt / checkpoints.CHECKPOINT_FILE
    raw = bytearray(state.read_bytes())
    raw[-30] ^= 0xFF
    state.write_bytes(bytes(raw))
    with pytest.raises(KdtuneError, match=r"is damaged .*SHA-256.* not trained on") as caught:
        checkpoints.restore(trainee, ckpt, torch.device("cpu"))
    _one_line(str(caught.value))


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainee = _trainee(synth_root)
    first = checkpoints.write(trainee, tmp_path, 1, [{"val/ap": 0.1}])
    real_save = torch.save

    def half_then_full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        Path(f).write_bytes(b"half")
        raise ENOSPC

    monkeypatch.setattr(checkpoints.torch, "save", half_then_full)
    with pytest.raises(DiskFull) as caught:
        checkpoints.write(trainee, tmp_path, 2, [{"val/ap": 0.1}, {"val/ap": 0.2}])
    _one_line(str(caught.value))
    assert "the checkpoint of epoch 2" in str(caught.value) and "earlier checkpoints are kept" in (
        str(caught.value)
    )
    with pytest.raises(DiskFull, match="the final model"):
        checkpoints.save_final(trainee, 2, [], tmp_path / "model.pt")
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0001"]  # no half of epoch 2
    history, start = checkpoints.restore(trainee, first, torch.device("cpu"))
    assert (history, start) == ([{"val/ap": 0.1}], 2)


# ----------------------------------------------------------------------------- shared caches

PREPARE = """
import sys
from pathlib import Path
from kdtune import bank
from kdtune.config import TrainConfig
from kdtune.data import coco
from kdtune.search.prepare import teacher_and_bank

real_decode, real_build = coco._decode_split, bank.build_bank


def decode(*args, **kwargs):
    print("BUILT data", args[2], flush=True)
    return real_decode(*args, **kwargs)


def build(*args, **kwargs):
    print("BUILT bank", flush=True)
    return real_build(*args, **kwargs)


coco._decode_split, bank.build_bank = decode, build
base = TrainConfig.from_dict({config!r})
ap = teacher_and_bank(base, Path(sys.argv[1]), lambda line: print(line, flush=True))
print("TEACHER AP", ap, flush=True)
"""


@pytest.mark.slow
def test_two_searches_sharing_a_results_folder_build_each_cache_once(tmp_path: Path) -> None:
    """Two searches' prepare stages at once on one results folder (as on a shared cluster
    volume): the synthetic data written once, each split decoded once, the teacher trained
    once, its bank built once; the other waits and reuses them; both end with the same
    teacher, and every cache is whole when opened afterwards."""
    import subprocess
    import sys

    config = {
        "level": "second",
        "data": "synthetic",
        "epochs": 1,
        "batch_size": 8,
        "max_train_images": 16,
        "max_val_images": 8,
        "teacher_epochs": 1,
        "teacher_recipe": "ground_truth",
        "teacher_views": 2,
        "num_threads": 1,
    }
    results = tmp_path / "shared"
    script = PREPARE.format(config=config)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(results)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    text = "".join(out for out, _ in outs)
    assert sorted(line for line in text.splitlines() if line.startswith("BUILT")) == [
        "BUILT bank",
        "BUILT data train",
        "BUILT data val",
    ], text
    assert text.count("training a med net as the teacher") == 1, text
    aps = {line for line in text.splitlines() if line.startswith("TEACHER AP")}
    assert len(aps) == 1, text
    (model,) = (results / "cache" / "teachers").glob("*/model.pt")
    assert source.teacher_damage(model) is None
    (bank_root,) = (p for p in (results / "cache" / "banks").iterdir() if p.is_dir())
    bank_mod.TeacherBank(bank_root)  # whole: sizes, shapes, digests as its manifest says
    for cached in (results / "cache" / "data").glob("*.pt"):
        assert coco_mod._cache_damage(torch.load(cached, weights_only=True)) is None
    synthetic = [p for p in (results / "cache").iterdir() if p.name.startswith("synthetic")]
    assert len(synthetic) == 1 and not list((results / "cache").glob(".*tmp*"))


# ----------------------------------------------------------------------------- the policy


def test_the_policy_tells_the_tracking_of_every_fault_and_keeps_a_bug_s_traceback() -> None:
    """A fault in a stage: the tracking told each time; a user's fault one line naming the
    stage and the resume command; a full disk made one; a bug returned as it is."""
    from kdtune.search.interruption import InterruptionPolicy

    told: list[object] = []
    resume = "kdtune search s.yaml --resume"
    policy = InterruptionPolicy("s", resume, lambda _r: None, lambda r: told.append(r))
    bug = RuntimeError("a bug")
    assert policy.failed(bug, "trials", None) is bug
    full = policy.failed(OSError(errno.ENOSPC, "full"), "confirmation", None)
    assert isinstance(full, DiskFull) and str(full).startswith(
        "disk full: writing the confirmation stage's records to search 's' ran out of space"
    )
    refused = policy.failed(KdtuneError("data: only 1 of the 4 images"), "trials", None)
    assert type(refused) is KdtuneError and str(refused) == (
        "data: only 1 of the 4 images [search 's' stopped in its trials stage; once this is "
        f"fixed, `{resume}` continues it]"
    )
    assert told == [None, None, None]

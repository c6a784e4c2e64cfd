"""The COCO loader: real mini COCO set, hand-made tiny sets, errors, cache and corrupt images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdtune.data import coco as coco_mod
from kdtune.data.coco import letterbox, load_split
from kdtune.errors import KdtuneError
from kdtune.skeleton import op18_to_coco17

# ----------------------------------------------------------------------------- helpers


def _coco_doc(images: list[dict[str, Any]], anns: list[dict[str, Any]]) -> dict[str, Any]:
    names = [f"k{i}" for i in range(17)]
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "keypoints": names, "skeleton": []}],
    }


def _write_root(root: Path, split: str, doc: dict[str, Any]) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"person_keypoints_{split}2017.json").write_text(json.dumps(doc))
    return root


def _ann(i: int, image_id: int, **kw: Any) -> dict[str, Any]:
    base = {"id": i, "image_id": image_id, "category_id": 1, "iscrowd": 0, "area": 100.0,
            "keypoints": [0] * 51, "num_keypoints": 0, "bbox": [0, 0, 1, 1]}  # fmt: skip
    base.update(kw)
    return base


def _copy_minipose(src: Path, dst: Path, n: int) -> tuple[Path, dict[str, Any]]:
    """A tmp COCO root holding the first ``n`` minipose train images and their annotations."""
    doc = json.loads((src / "annotations" / "person_keypoints_train2017.json").read_text())
    doc["images"] = sorted(doc["images"], key=lambda im: im["id"])[:n]
    keep = {im["id"] for im in doc["images"]}
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
    _write_root(dst, "train", doc)
    for im in doc["images"]:
        shutil.copy(src / "train2017" / im["file_name"], dst / "train2017" / im["file_name"])
    return dst, doc


# ----------------------------------------------------------------------------- letterbox


def test_letterbox_golden_values() -> None:
    out = letterbox(np.full((101, 200, 3), 255, np.uint8), 128)
    assert out.scale == pytest.approx(0.64)
    assert out.side == 200 and out.offset == (0, 49)
    assert out.pad == pytest.approx((0.5 * 0.64 - 0.5, 49.5 * 0.64 - 0.5))
    assert out.image is not None
    # the content spans rows 49.5 * 0.64 - 0.5 = 31.18 to 150.5 * 0.64 - 0.5 = 95.82
    assert out.image[:31].max() == 0 and out.image[97:].max() == 0 and out.image[32:96].min() == 255


@pytest.mark.parametrize("hw", [(427, 640), (640, 427), (101, 200), (96, 80), (333, 517)])
def test_a_drawn_dot_lands_where_its_keypoint_says(hw: tuple[int, int]) -> None:
    """The image and its labels move together: the letterboxed centroid of a dot drawn at a
    keypoint is that keypoint's letterboxed position, ``original * scale + pad``."""
    h, w = hw
    for x, y in [(0.3 * w, 0.6 * h), (w - 6.0, 5.0), (5.0, h - 6.0)]:
        image = np.zeros((h, w, 3), np.uint8)
        cx, cy = round(x), round(y)  # a 9x9 dot centred on pixel (cx, cy)
        image[cy - 4 : cy + 5, cx - 4 : cx + 5] = 255
        out = letterbox(image, 128)
        assert out.image is not None
        weight = out.image[..., 0].astype(np.float64)
        rows, cols = np.indices(weight.shape)
        seen = (cols * weight).sum() / weight.sum(), (rows * weight).sum() / weight.sum()
        said = cx * out.scale + out.pad[0], cy * out.scale + out.pad[1]
        assert seen == pytest.approx(said, abs=0.05)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 700), w=st.integers(1, 700), size=st.sampled_from([32, 128, 256]))
def test_letterbox_maps_the_image_into_the_square(h: int, w: int, size: int) -> None:
    out = letterbox(np.zeros((h, w, 3), np.uint8), size)
    assert out.image is not None and out.image.shape == (size, size, 3)
    assert out.scale == pytest.approx(size / max(h, w))
    for pad, extent in zip(out.pad, (w, h), strict=True):
        # the original's pixels span [-0.5, extent - 0.5] (pixel i centred at i): they land
        # inside the square's [-0.5, size - 0.5], centred to within one original pixel
        low, high = pad - 0.5 * out.scale, pad + (extent - 0.5) * out.scale
        assert low >= -0.5 - 1e-9 and high <= size - 0.5 + 1e-9
        assert abs((low + 0.5) - (size - 0.5 - high)) <= out.scale + 1e-9


# ----------------------------------------------------------------------------- real mini COCO


@pytest.fixture(scope="module")
def mini_train(minipose: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_split(minipose, "train", 128, cache_dir=tmp_path_factory.mktemp("cache"))


def test_minipose_shapes(minipose: Path, tmp_path: Path) -> None:
    for split in ("train", "val"):
        ps = load_split(minipose, split, 96, cache_dir=tmp_path)
        doc = json.loads(
            (minipose / "annotations" / f"person_keypoints_{split}2017.json").read_text()
        )
        with_kps = [a for a in doc["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
        assert len(ps) == 30 and ps.skipped == 0 and ps.split == split
        assert ps.images.shape == (30, 3, 96, 96) and ps.images.dtype == torch.uint8
        assert ps.keypoints.shape[0] == 30 and ps.keypoints.shape[2:] == (18, 3)
        assert ps.masks.shape == (30, 96, 96) and ps.masks.dtype == torch.uint8
        assert ps.image_ids.tolist() == sorted(im["id"] for im in doc["images"])
        assert int((ps.keypoints[..., 2].amax(-1) > 0).sum()) == len(with_kps)
        assert Path(ps.ann_file).name == f"person_keypoints_{split}2017.json"


def test_minipose_keypoints_land_inside_the_letterbox(mini_train: Any) -> None:
    ps = mini_train
    doc = json.loads(Path(ps.ann_file).read_text())
    size = {im["id"]: (im["width"], im["height"]) for im in doc["images"]}
    for i in range(len(ps)):
        w, h = size[int(ps.image_ids[i])]
        kp = ps.keypoints[i][ps.keypoints[i][..., 2] > 0]
        lo = ps.pads[i]
        hi = lo + ps.scales[i] * torch.tensor([w, h], dtype=torch.float32)
        assert (kp[:, :2] >= lo - 1e-3).all() and (kp[:, :2] <= hi + 1e-3).all()
        assert (kp[:, :2] >= -0.5).all() and (kp[:, :2] <= ps.input_size - 0.5).all()


def test_minipose_to_original_recovers_coco_coordinates(mini_train: Any) -> None:
    ps = mini_train
    doc = json.loads(Path(ps.ann_file).read_text())
    checked = 0
    for i in range(len(ps)):
        image_id = int(ps.image_ids[i])
        anns = [a for a in doc["annotations"] if a["image_id"] == image_id]
        people = [a for a in anns if not a["iscrowd"] and a["num_keypoints"] > 0]
        back = ps.to_original(ps.keypoints[i : i + 1, :, :, :2], torch.tensor([i]))[0]
        back17 = op18_to_coco17(back.numpy())
        vis17 = op18_to_coco17(ps.keypoints[i].numpy())[..., 2]
        for p, a in enumerate(people):
            gt = np.array(a["keypoints"], dtype=np.float64).reshape(17, 3)
            lab = gt[:, 2] > 0
            np.testing.assert_array_equal(vis17[p], gt[:, 2])
            np.testing.assert_allclose(back17[p][lab], gt[lab, :2], atol=1e-3)
            checked += int(lab.sum())
        assert not ps.keypoints[i, len(people) :].any()  # padding persons are all zero
    assert checked > 500


def test_minipose_ignore_masks(mini_train: Any) -> None:
    ps = mini_train
    doc = json.loads(Path(ps.ann_file).read_text())
    ignored = {a["image_id"] for a in doc["annotations"] if a["iscrowd"] or a["num_keypoints"] == 0}
    crowd = {a["image_id"] for a in doc["annotations"] if a["iscrowd"]}
    annotated = {a["image_id"] for a in doc["annotations"]}
    assert len(crowd) == 1
    for i, image_id in enumerate(ps.image_ids.tolist()):
        area = int(ps.masks[i].sum())
        if image_id in ignored:
            assert area > 0, image_id
        else:
            assert area == 0, image_id
        if image_id not in annotated:
            assert not ps.keypoints[i].any()
    assert set(np.unique(ps.masks.numpy())) <= {0, 1}


def test_minipose_ignore_mask_area_matches_the_annotations(mini_train: Any) -> None:
    """Back in original pixels, the crowd image's mask covers about its regions' total area."""
    ps = mini_train
    doc = json.loads(Path(ps.ann_file).read_text())
    crowd = next(a for a in doc["annotations"] if a["iscrowd"])
    regions = [
        a for a in doc["annotations"]
        if a["image_id"] == crowd["image_id"] and (a["iscrowd"] or a["num_keypoints"] == 0)
    ]  # fmt: skip
    i = ps.image_ids.tolist().index(crowd["image_id"])
    area = float(ps.masks[i].sum()) / float(ps.scales[i]) ** 2
    assert 0.8 * max(a["area"] for a in regions) <= area <= 1.3 * sum(a["area"] for a in regions)


def test_second_load_is_a_cache_hit_without_decoding(
    minipose: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_split(minipose, "val", 64, cache_dir=tmp_path, max_images=5)
    assert len(list(tmp_path.glob("val-64-*.pt"))) == 1

    def no_decoding(*args: Any, **kw: Any) -> None:
        raise AssertionError("a JPEG was decoded on a cache hit")

    monkeypatch.setattr(coco_mod.cv2, "imread", no_decoding)
    monkeypatch.setattr(coco_mod, "_read_coco", no_decoding)
    second = load_split(minipose, "val", 64, cache_dir=tmp_path, max_images=5)
    for name in ("images", "keypoints", "masks", "image_ids", "scales", "pads"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert (second.ann_file, second.split, second.skipped) == (first.ann_file, "val", 0)
    assert len(second) == 5


def test_other_sizes_and_limits_are_separate_cache_entries(minipose: Path, tmp_path: Path) -> None:
    a = load_split(minipose, "val", 64, cache_dir=tmp_path, max_images=3)
    b = load_split(minipose, "val", 32, cache_dir=tmp_path, max_images=4)
    assert (len(a), a.input_size, len(b), b.input_size) == (3, 64, 4, 32)
    assert len(list(tmp_path.glob("*.pt"))) == 2
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_a_corrupt_cache_file_is_rebuilt(minipose: Path, tmp_path: Path) -> None:
    load_split(minipose, "val", 32, cache_dir=tmp_path, max_images=2)
    (cached,) = tmp_path.glob("*.pt")
    cached.write_bytes(b"not a torch file")
    assert len(load_split(minipose, "val", 32, cache_dir=tmp_path, max_images=2)) == 2


def test_corrupt_jpeg_is_skipped_and_counted(minipose: Path, tmp_path: Path) -> None:
    root, doc = _copy_minipose(minipose, tmp_path / "coco", 4)
    bad = doc["images"][1]
    (root / "train2017" / bad["file_name"]).write_bytes(b"\xff\xd8\xff garbage, not a JPEG")
    lines: list[str] = []
    ps = load_split(root, "train", 64, cache_dir=tmp_path / "cache", say=lines.append)
    assert (len(ps), ps.skipped) == (3, 1)
    assert bad["id"] not in ps.image_ids.tolist()
    named, total = lines  # one line naming the image, one total
    assert bad["file_name"] in named and f"image id {bad['id']}" in named
    assert "not a readable image" in named
    assert "skipped 1 of 4 image(s)" in total and "3 kept" in total
    again: list[str] = []  # a cache hit says so too, naming the first image left out
    assert load_split(root, "train", 64, cache_dir=tmp_path / "cache", say=again.append).skipped
    assert len(again) == 1 and "1 image(s)" in again[0] and bad["file_name"] in again[0]


def test_missing_image_file_is_skipped(minipose: Path, tmp_path: Path) -> None:
    root, doc = _copy_minipose(minipose, tmp_path / "coco", 3)
    (root / "train2017" / doc["images"][0]["file_name"]).unlink()
    lines: list[str] = []
    ps = load_split(root, "train", 64, cache_dir=tmp_path / "cache", say=lines.append)
    assert (len(ps), ps.skipped) == (2, 1)
    assert "no such file" in lines[0] and doc["images"][0]["file_name"] in lines[0]


def test_all_images_unreadable_is_an_error(tmp_path: Path) -> None:
    doc = _coco_doc([{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}], [])
    root = _write_root(tmp_path / "coco", "train", doc)
    (root / "train2017" / "a.jpg").write_bytes(b"broken")
    with pytest.raises(KdtuneError, match="none of the 1 images"):
        load_split(root, "train", 32, cache_dir=tmp_path / "cache")


# ----------------------------------------------------------------------------- hand-made masks


def test_each_segmentation_kind_is_masked_where_it_lies(tmp_path: Path) -> None:
    """A 64x32 image at size 32 (scale 0.5, 16 rows above it): polygon, RLE (both), bbox."""
    from pycocotools import mask as mask_utils

    h, w = 32, 64
    block = np.zeros((h, w), np.uint8, order="F")
    block[0:8, 40:48] = 1
    rle = mask_utils.encode(block)
    counts: list[int] = []  # the same block as uncompressed RLE (column-major runs)
    flat, cur, run = block.flatten(order="F"), 0, 0
    for v in flat.tolist():
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    kps = [0.0] * 51
    kps[0:3] = [10.0, 20.0, 2.0]
    anns = [
        _ann(1, 7, segmentation=[[0, 0, 16, 0, 16, 16, 0, 16]]),  # polygon, no keypoints
        _ann(2, 7, iscrowd=1, segmentation={"size": [h, w], "counts": counts}),
        _ann(3, 7, iscrowd=1, segmentation={"size": [h, w], "counts": rle["counts"].decode()}),
        _ann(4, 7, bbox=[56, 24, 8, 8]),  # no segmentation at all
        _ann(5, 7, keypoints=kps, num_keypoints=1, segmentation=[[30, 16, 40, 16, 40, 30]]),
    ]
    root = _write_root(
        tmp_path / "coco",
        "train",
        _coco_doc([{"id": 7, "file_name": "x.jpg", "height": h, "width": w}], anns),
    )
    cv2.imwrite(str(root / "train2017" / "x.jpg"), np.full((h, w, 3), 200, np.uint8))
    ps = load_split(root, "train", 32, cache_dir=tmp_path / "cache")
    # keypoints (pixel i centred at i): pad (0.5 * 0.5 - 0.5, 16.5 * 0.5 - 0.5)
    assert ps.scales.tolist() == [0.5] and ps.pads.tolist() == [[-0.25, 7.75]]
    m = ps.masks[0].numpy()
    assert m[8:16, 0:8].all()  # polygon [0,16]^2 -> [0,8] x [8,16]
    assert m[8:12, 20:24].all()  # the RLE block (both encodings) -> x 20..24, y 8..12
    assert m[20:24, 28:32].all()  # the bbox -> x 28..32, y 20..24
    assert m.sum() == 64 + 16 + 16  # and nothing else: the person with keypoints is not ignored
    np.testing.assert_allclose(ps.keypoints[0, 0, 0].numpy(), [4.75, 17.75, 2.0])
    assert ps.keypoints.shape == (1, 1, 18, 3)


# ----------------------------------------------------------------------------- errors


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KdtuneError, match=r"COCO root .* not found"):
        load_split(tmp_path / "nowhere", "train")


def test_missing_annotation_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "train2017").mkdir()
    with pytest.raises(KdtuneError, match=r"person_keypoints_train2017.json not found"):
        load_split(tmp_path, "train", cache_dir=tmp_path / "c")


def test_missing_image_folder_is_an_error(tmp_path: Path) -> None:
    root = _write_root(tmp_path / "coco", "val", _coco_doc([], []))
    (root / "val2017").rmdir()
    with pytest.raises(KdtuneError, match=r"image folder .*val2017 not found"):
        load_split(root, "val", cache_dir=tmp_path / "c")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a COCO annotation file"),
        ('{"images": [], "annotations": []}', "no categories list"),
        (
            '{"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}',
            "no 'person' category with 17 keypoints",
        ),
        (
            '{"images": [], "annotations": [], '
            '"categories": [{"id": 3, "name": "car", "keypoints": []}]}',
            "no 'person' category",
        ),
        ('{"images": [], "annotations": [], "categories": ['
         + json.dumps(_coco_doc([], [])["categories"][0]) + "]}",
         "lists no images"),
    ],
)  # fmt: skip
def test_bad_annotation_files_are_errors(tmp_path: Path, content: str, message: str) -> None:
    root = _write_root(tmp_path / "coco", "train", {})
    (root / "annotations" / "person_keypoints_train2017.json").write_text(content)
    with pytest.raises(KdtuneError, match=message) as info:
        load_split(root, "train", cache_dir=tmp_path / "c")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"split": "../x"}, "split"),
        ({"input_size": 4}, "input_size"),
        ({"max_images": 0}, "max_images"),
    ],
)
def test_bad_arguments_are_errors(tmp_path: Path, kw: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"split": "train", "input_size": 64, "max_images": None} | kw
    with pytest.raises(KdtuneError, match=message):
        load_split(
            tmp_path,
            args["split"],
            args["input_size"],
            cache_dir=tmp_path,
            max_images=args["max_images"],
        )

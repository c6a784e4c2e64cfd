"""Load a split of a COCO 2017 person-keypoints data set into a cached :class:`PoseSet`.

Layout (the official one)::

    ROOT/annotations/person_keypoints_{split}2017.json
    ROOT/{split}2017/*.jpg

Every JPEG is decoded once, letterboxed to ``input_size`` (scaled by ``input_size / max(h, w)``,
centred, padded with 0) and the whole split is saved as one file under the cache folder, so
later runs and epochs never decode an image again. Keypoint coordinates put pixel ``i``'s centre
at ``i`` and map exactly as the image does: ``letterboxed = original * scale + pad``.

What each annotation becomes:

- a person with keypoints (``iscrowd`` 0, at least one labelled joint): a row of ``keypoints``
  in OpenPose-18 order;
- a crowd, or a person without labelled keypoints: its segmentation (polygons, RLE or
  uncompressed RLE; its bbox where it has none) is rasterised into the image's ignore ``mask``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from kdtune.data.poseset import PoseSet
from kdtune.errors import KdtuneError
from kdtune.paths import cache_dir as default_cache_dir
from kdtune.skeleton import NUM_KEYPOINTS, coco17_to_op18

CACHE_FORMAT = 2  # bump when the cached layout or its meaning changes
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_TENSORS = ("images", "keypoints", "masks", "image_ids", "scales", "pads")


def annotation_file(root: Path, split: str) -> Path:
    """``ROOT/annotations/person_keypoints_{split}2017.json``."""
    return root / "annotations" / f"person_keypoints_{split}2017.json"


def image_dir(root: Path, split: str) -> Path:
    """``ROOT/{split}2017``."""
    return root / f"{split}2017"


# ----------------------------------------------------------------------------- public API


def load_split(
    root: str | Path,
    split: str,
    input_size: int = 128,
    cache_dir: Path | None = None,
    max_images: int | None = None,
    image_ids: Sequence[int] | None = None,
) -> PoseSet:
    """One split of the COCO set at ``root`` as a :class:`PoseSet`, decoded once and cached.

    ``image_ids`` keeps only those images (a carve of the split: :func:`kdtune.data.sources.carve`);
    ``max_images`` then keeps the first images by id. Unreadable images are left out, counted in
    ``PoseSet.skipped`` and reported with one warning. ``cache_dir`` defaults to
    ``kdtune.paths.cache_dir() / "data"``.
    """
    root = Path(root).expanduser()
    _check_args(split, input_size, max_images)
    ann_path, img_dir = _check_layout(root, split)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "data"
    key = _cache_key(ann_path, split, input_size, max_images, image_ids)
    cached = folder / f"{split}-{input_size}-{key}.pt"
    hit = _read_cache(cached, ann_path)
    if hit is not None:
        if hit.skipped:
            warnings.warn(
                f"data: {hit.skipped} unreadable image(s) of {img_dir} were left out when {cached} "
                "was made; delete it to read them again",
                stacklevel=2,
            )
        return hit
    poses = _decode_split(ann_path, img_dir, split, input_size, max_images, image_ids)
    _write_cache(cached, poses)
    return poses


# ----------------------------------------------------------------------------- checks


def _check_args(split: str, input_size: int, max_images: int | None) -> None:
    if not isinstance(split, str) or not _SPLIT_RE.match(split):
        raise KdtuneError(f"data: split must be a name like 'train' or 'val', got {split!r}")
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 8:
        raise KdtuneError(f"data: input_size must be an integer >= 8, got {input_size!r}")
    if max_images is not None and (
        not isinstance(max_images, int) or isinstance(max_images, bool) or max_images < 1
    ):
        raise KdtuneError(f"data: max_images must be a positive integer, got {max_images!r}")


def _check_layout(root: Path, split: str) -> tuple[Path, Path]:
    """The split's annotation file and image folder, or a KdtuneError naming what is missing."""
    if not root.is_dir():
        raise KdtuneError(
            f"data: COCO root {root} not found (give a COCO folder or a data source's name)"
        )
    ann = annotation_file(root, split)
    if not ann.is_file():
        raise KdtuneError(f"data: annotation file {ann} not found")
    img_dir = image_dir(root, split)
    if not img_dir.is_dir():
        raise KdtuneError(f"data: image folder {img_dir} not found")
    return ann, img_dir


def _read_coco(ann_path: Path) -> tuple[COCO, int]:
    """Parse and check a person-keypoints file; returns the index and the person category id."""
    try:
        doc = json.loads(ann_path.read_bytes())
    except json.JSONDecodeError as e:
        raise KdtuneError(
            f"data: {ann_path} is not valid JSON ({e.msg}, line {e.lineno})"
        ) from None
    except UnicodeDecodeError:
        raise KdtuneError(f"data: {ann_path} is not valid JSON (not UTF-8 text)") from None
    if not isinstance(doc, dict):
        raise KdtuneError(
            f"data: {ann_path} is not a COCO annotation file (top level is not an object)"
        )
    missing = [
        k for k in ("images", "annotations", "categories") if not isinstance(doc.get(k), list)
    ]
    if missing:
        raise KdtuneError(
            f"data: {ann_path} is not a COCO annotation file (no {', '.join(missing)} list)"
        )
    person = [
        c for c in doc["categories"]
        if isinstance(c, dict) and c.get("name") == "person"
        and isinstance(c.get("keypoints"), list) and len(c["keypoints"]) == 17
    ]  # fmt: skip
    if not person:
        raise KdtuneError(
            f"data: {ann_path} has no 'person' category with 17 keypoints "
            "(not a person-keypoints file)"
        )
    for im in doc["images"]:
        if not (
            isinstance(im, dict) and all(k in im for k in ("id", "file_name", "height", "width"))
        ):
            raise KdtuneError(
                f"data: {ann_path}: an image entry lacks id/file_name/height/width: {str(im)[:80]}"
            )
    coco = COCO()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, int(person[0]["id"])


# ----------------------------------------------------------------------------- decoding


@dataclass
class _Decoded:
    """One image after decoding (``image`` None when unreadable)."""

    image: np.ndarray | None  # HWC RGB letterboxed
    scale: float = 0.0
    pad: tuple[float, float] = (0.0, 0.0)
    offset: tuple[int, int] = (0, 0)  # top-left of the original in its black square
    side: int = 0  # the square's side: max(h, w)

    @property
    def area_pad(self) -> tuple[float, float]:
        """The pad for coordinates whose pixel ``i`` spans ``[i, i + 1]`` (COCO's polygons and
        boxes): ``letterboxed = original * scale + area_pad``."""
        return (self.offset[0] * self.scale, self.offset[1] * self.scale)

    def place(self, plane: np.ndarray, size: int, interpolation: int) -> np.ndarray:
        """``plane`` (an original-sized image or mask) letterboxed exactly as the image was."""
        h, w = plane.shape[:2]
        square = np.zeros((self.side, self.side, *plane.shape[2:]), dtype=plane.dtype)
        x0, y0 = self.offset
        square[y0 : y0 + h, x0 : x0 + w] = plane
        return cv2.resize(square, (size, size), interpolation=interpolation)


def letterbox(image: np.ndarray, size: int) -> _Decoded:
    """Centre ``image`` on a black square of side ``max(h, w)`` (at whole pixels), then resize
    the square to ``size``² (area-averaged when shrinking, bilinear when enlarging).

    Resizing a square to a square scales both axes by exactly ``scale = size / max(h, w)``, so
    the content lands where ``original * scale + pad`` says, in the pixel-index coordinates
    (pixel ``i`` centred at ``i``) that COCO's keypoints, the targets and the decoder use:
    ``cv2.resize`` maps index ``i`` to ``(i + 0.5) * scale - 0.5``, hence
    ``pad = (offset + 0.5) * scale - 0.5``.
    """
    h, w = image.shape[:2]
    side = max(h, w)
    scale = size / side
    offset = ((side - w) // 2, (side - h) // 2)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    dec = _Decoded(None, scale, (0.0, 0.0), offset, side)
    dec.image = dec.place(image, size, interp)
    dec.pad = ((offset[0] + 0.5) * scale - 0.5, (offset[1] + 0.5) * scale - 0.5)
    return dec


def _decode_image(path: Path, size: int, expect_hw: tuple[int, int]) -> _Decoded:
    """Read one JPEG (raw pixel orientation, as COCO annotates it); None when unreadable."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.shape[:2] != expect_hw:
        return _Decoded(None)
    return letterbox(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size)


def _decode_split(
    ann_path: Path,
    img_dir: Path,
    split: str,
    size: int,
    max_images: int | None,
    image_ids: Sequence[int] | None = None,
) -> PoseSet:
    """Decode every image of the split and turn its annotations into keypoints and masks."""
    coco, person_id = _read_coco(ann_path)
    known = sorted(coco.imgs) if image_ids is None else sorted(set(coco.imgs) & set(image_ids))
    ids = known[:max_images]
    if not ids:
        raise KdtuneError(f"data: {ann_path} lists no images")
    n = len(ids)
    images = np.zeros((n, 3, size, size), dtype=np.uint8)  # filled in place: no second copy
    masks = np.zeros((n, size, size), dtype=np.uint8)
    scales, pads = np.zeros(n, dtype=np.float32), np.zeros((n, 2), dtype=np.float32)
    persons: list[np.ndarray] = []
    ok = np.zeros(n, dtype=bool)
    for i, dec in enumerate(_decode_all(img_dir, [coco.imgs[k] for k in ids], size)):
        if dec.image is None:
            continue
        anns = coco.loadAnns(coco.getAnnIds(imgIds=ids[i], catIds=[person_id], iscrowd=None))
        kps, mask = _image_targets(anns, coco.imgs[ids[i]], dec, size)
        persons.append(kps)
        masks[i] = mask
        images[i] = dec.image.transpose(2, 0, 1)
        scales[i], pads[i], ok[i] = dec.scale, dec.pad, True
    keep = np.flatnonzero(ok)
    skipped = n - len(keep)
    if not len(keep):
        raise KdtuneError(f"data: none of the {n} images in {img_dir} could be read")
    if skipped:
        warnings.warn(
            f"data: skipped {skipped} unreadable image(s) of {n} in {img_dir}", stacklevel=3
        )
        images, masks, scales, pads = images[keep], masks[keep], scales[keep], pads[keep]
    keypoints = np.zeros((len(keep), max([1, *map(len, persons)]), NUM_KEYPOINTS, 3), np.float32)
    for row, p in enumerate(persons):
        keypoints[row, : len(p)] = p
    return PoseSet(
        images=torch.from_numpy(images),
        keypoints=torch.from_numpy(keypoints),
        masks=torch.from_numpy(masks),
        image_ids=torch.tensor(ids, dtype=torch.int64)[torch.from_numpy(keep)],
        scales=torch.from_numpy(scales),
        pads=torch.from_numpy(pads),
        ann_file=str(ann_path.resolve()),
        split=split,
        skipped=skipped,
    )


def _decode_all(img_dir: Path, infos: list[dict[str, Any]], size: int) -> Iterator[_Decoded]:
    """Decode the images in order, several at a time (OpenCV releases the GIL)."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        yield from pool.map(
            lambda im: _decode_image(img_dir / im["file_name"], size, (im["height"], im["width"])),
            infos,
        )


def _image_targets(
    anns: list[dict[str, Any]], info: dict[str, Any], dec: _Decoded, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints ``[P, 18, 3]`` (letterboxed) of the labelled persons and the ignore mask."""
    mask = np.zeros((size, size), dtype=np.uint8)
    people = []
    for ann in anns:
        kps = np.asarray(ann.get("keypoints") or np.zeros(51), dtype=np.float32)
        if kps.size != 51:
            raise KdtuneError(
                f"data: annotation {ann.get('id')} has {kps.size} keypoint values, not 51"
            )
        kps = kps.reshape(17, 3)
        if ann.get("iscrowd", 0) or not (kps[:, 2] > 0).any():
            mask |= _ignore_mask(ann, info, dec, size)
        else:
            people.append(kps)
    if not people:
        return np.zeros((0, NUM_KEYPOINTS, 3), dtype=np.float32), mask
    op = coco17_to_op18(np.stack(people))
    labelled = op[..., 2:3] > 0
    pad = np.array(dec.pad, dtype=np.float64)
    xy = op[..., :2].astype(np.float64) * dec.scale + pad
    op[..., :2] = np.where(labelled, xy, 0.0).astype(np.float32)
    return op, mask


def _ignore_mask(ann: dict[str, Any], info: dict[str, Any], dec: _Decoded, size: int) -> np.ndarray:
    """The annotation's region in letterboxed pixels (0/1 uint8 ``[size, size]``)."""
    seg = ann.get("segmentation")
    polys = [p for p in seg if len(p) >= 6] if isinstance(seg, list) else []
    if polys:
        pad = np.array(dec.area_pad)
        scaled = [
            list((np.asarray(p, dtype=np.float64).reshape(-1, 2) * dec.scale + pad).reshape(-1))
            for p in polys
        ]
        rle = mask_utils.merge(mask_utils.frPyObjects(scaled, size, size))
        return mask_utils.decode(rle).astype(np.uint8)
    if isinstance(seg, dict) and "counts" in seg:
        return _rle_mask(seg, info, dec, size)
    return _bbox_mask(ann.get("bbox"), dec, size)


def _rle_mask(seg: dict[str, Any], info: dict[str, Any], dec: _Decoded, size: int) -> np.ndarray:
    """Decode an RLE (compressed or not) at full size, then shrink it like the image."""
    h, w = int(info["height"]), int(info["width"])
    if isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        counts = seg["counts"]
        rle = {
            "size": seg.get("size", [h, w]),
            "counts": counts.encode() if isinstance(counts, str) else counts,
        }
    full = mask_utils.decode(rle).astype(np.float32)
    return (dec.place(full, size, cv2.INTER_AREA) >= 0.5).astype(np.uint8)


def _bbox_mask(bbox: Any, dec: _Decoded, size: int) -> np.ndarray:
    """A filled box for an annotation without a segmentation (nothing without a bbox either)."""
    out = np.zeros((size, size), dtype=np.uint8)
    if not (isinstance(bbox, list) and len(bbox) == 4):
        return out
    x, y, bw, bh = (float(v) for v in bbox)
    x0, y0 = x * dec.scale + dec.area_pad[0], y * dec.scale + dec.area_pad[1]
    x1, y1 = x0 + bw * dec.scale, y0 + bh * dec.scale
    c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    c1, r1 = min(size, int(np.ceil(x1))), min(size, int(np.ceil(y1)))
    out[r0:r1, c0:c1] = 1
    return out


# ----------------------------------------------------------------------------- cache


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content, remembered per (path, size, mtime) for this process."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


def image_ids_of(ann_path: Path) -> list[int]:
    """The ids of every image a person-keypoints file lists, sorted (a carve draws from them)."""
    coco, _ = _read_coco(ann_path)
    return sorted(int(i) for i in coco.imgs)


def _cache_key(
    ann_path: Path,
    split: str,
    input_size: int,
    max_images: int | None,
    image_ids: Sequence[int] | None = None,
) -> str:
    parts: tuple[str, ...] = (
        file_digest(ann_path), split, str(input_size), str(max_images), str(CACHE_FORMAT),
    )  # fmt: skip
    if image_ids is not None:  # a carve: named by the ids it keeps
        kept = ",".join(str(i) for i in sorted(image_ids))
        parts += (hashlib.sha256(kept.encode()).hexdigest(),)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _read_cache(path: Path, ann_path: Path) -> PoseSet | None:
    """The cached set, or None when absent or unreadable (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("format") != CACHE_FORMAT:
            return None
        return PoseSet(
            **{k: blob[k] for k in _TENSORS},
            ann_file=str(ann_path.resolve()),
            split=str(blob["split"]),
            skipped=int(blob["skipped"]),
        )
    except Exception:  # a truncated or foreign file: rebuild it
        return None


def _write_cache(path: Path, poses: PoseSet) -> None:
    """Save atomically: a temporary file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob: dict[str, Any] = {k: getattr(poses, k) for k in _TENSORS}
    blob.update(
        format=CACHE_FORMAT, ann_file=poses.ann_file, split=poses.split, skipped=poses.skipped
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like any file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

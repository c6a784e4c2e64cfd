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
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
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
from kdtune.errors import KdtuneError, disk_full, is_disk_full
from kdtune.paths import cache_dir as default_cache_dir
from kdtune.paths import file_lock
from kdtune.skeleton import NUM_KEYPOINTS, coco17_to_op18

CACHE_FORMAT = 2  # bump when the cached layout or its meaning changes
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_TENSORS = ("images", "keypoints", "masks", "image_ids", "scales", "pads")
# a split that images left out leave with fewer than this, or with under half, is refused
MIN_IMAGES = 2
SHOWN_SKIPS = 20  # images named one line each; the rest are counted
Say = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
    say: Say = _stderr,
    image_ids: Sequence[int] | None = None,
) -> PoseSet:
    """One split of the COCO set at ``root`` as a :class:`PoseSet`, decoded once and cached.

    ``image_ids`` keeps only those images (a carve of the split:
    :func:`kdtune.data.sources.carve`); ``max_images`` then keeps the first images by id. An
    unreadable image, or one whose annotations are malformed, is left out and said in one line
    (``say``, stderr by default: the file, the image id, what is wrong), then a total; a split
    left with too few images is refused. The cache is checked when it is opened (shapes, a
    digest of its tensors) and decoded again when damaged; one process decodes it while others
    wanting it wait. ``cache_dir`` defaults to
    ``kdtune.paths.cache_dir() / "data"``.
    """
    root = Path(root).expanduser()
    _check_args(split, input_size, max_images)
    ann_path, img_dir = _check_layout(root, split)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "data"
    key = _cache_key(ann_path, split, input_size, max_images, image_ids)
    cached = folder / f"{split}-{input_size}-{key}.pt"
    hit = _read_cache(cached, ann_path, lambda _line: None)  # damage is said under the lock
    if hit is None:
        folder.mkdir(parents=True, exist_ok=True)
        with file_lock(folder / f".{cached.name}.lock"):
            hit = _read_cache(cached, ann_path, say)  # decoded by another process meanwhile?
            if hit is None:
                poses, notes = _decode_split(
                    ann_path, img_dir, split, input_size, max_images, say, image_ids
                )
                _write_cache(cached, poses, notes)
                return poses
    if hit[0].skipped:
        say(
            f"data: {hit[0].skipped} image(s) of {img_dir} were left out when {cached} was made "
            f"(first: {hit[1][0] if hit[1] else 'not recorded'}); delete it to read them again"
        )
    return hit[0]


def _say_skipped(say: Say, notes: list[str], total: int, img_dir: Path) -> None:
    """One line per image left out (the first :data:`SHOWN_SKIPS`), then the total."""
    if not notes:
        return
    for note in notes[:SHOWN_SKIPS]:
        say(f"data: skipped {note}")
    more = len(notes) - SHOWN_SKIPS
    tail = f" ({more} not listed above)" if more > 0 else ""
    say(
        f"data: skipped {len(notes)} of {total} image(s) in {img_dir}{tail}; "
        f"{total - len(notes)} kept"
    )


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
    problem: str = ""  # why ``image`` is None, in words
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
    dec = _Decoded(None, "", scale, (0.0, 0.0), offset, side)
    dec.image = dec.place(image, size, interp)
    dec.pad = ((offset[0] + 0.5) * scale - 0.5, (offset[1] + 0.5) * scale - 0.5)
    return dec


def _decode_image(path: Path, size: int, expect_hw: tuple[int, int]) -> _Decoded:
    """Read one JPEG (raw pixel orientation, as COCO annotates it); its image None, and what is
    wrong, when it cannot be used."""
    if not path.is_file():
        return _Decoded(None, "no such file")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        return _Decoded(None, "not a readable image (truncated, or not an image file)")
    if bgr.shape[:2] != expect_hw:
        h, w = bgr.shape[:2]
        return _Decoded(
            None, f"is {w}x{h} pixels, its annotation says {expect_hw[1]}x{expect_hw[0]}"
        )
    return letterbox(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size)


def _decode_split(
    ann_path: Path,
    img_dir: Path,
    split: str,
    size: int,
    max_images: int | None,
    say: Say = _stderr,
    image_ids: Sequence[int] | None = None,
) -> tuple[PoseSet, list[str]]:
    """Decode every image of the split and turn its annotations into keypoints and masks; the
    set and, for each image left out, a note naming it and what is wrong (each said)."""
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
    notes: list[str] = []
    for i, dec in enumerate(_decode_all(img_dir, [coco.imgs[k] for k in ids], size)):
        info = coco.imgs[ids[i]]
        where = f"{img_dir / str(info['file_name'])} (image id {ids[i]})"
        if dec.image is None:
            notes.append(f"{where}: {dec.problem}")
            continue
        anns = coco.loadAnns(coco.getAnnIds(imgIds=ids[i], catIds=[person_id], iscrowd=None))
        try:
            kps, mask = _image_targets(anns, info, dec, size)
        except _Malformed as exc:
            notes.append(f"{where}: {exc} in {ann_path.name}")
            continue
        persons.append(kps)
        masks[i] = mask
        images[i] = dec.image.transpose(2, 0, 1)
        scales[i], pads[i], ok[i] = dec.scale, dec.pad, True
    keep = np.flatnonzero(ok)
    skipped = n - len(keep)
    _say_skipped(say, notes, n, img_dir)
    if not len(keep):
        raise KdtuneError(
            f"data: none of the {n} images in {img_dir} could be used (first: {notes[0]})"
        )
    if skipped and (len(keep) < MIN_IMAGES or skipped * 2 > n):  # left with too few
        raise KdtuneError(
            f"data: only {len(keep)} of the {n} images of {img_dir} could be used, too few to "
            f"train or evaluate on (first left out: {notes[0]}); repair the images or "
            "annotations named above, or remove them from the annotation file"
        )
    if skipped:
        images, masks, scales, pads = images[keep], masks[keep], scales[keep], pads[keep]
    keypoints = np.zeros((len(keep), max([1, *map(len, persons)]), NUM_KEYPOINTS, 3), np.float32)
    for row, p in enumerate(persons):
        keypoints[row, : len(p)] = p
    poses = PoseSet(
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
    return poses, notes


class _Malformed(ValueError):
    """An annotation that cannot be used: its image is left out, named with what is wrong."""


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
        try:
            kps = np.asarray(ann.get("keypoints") or np.zeros(51), dtype=np.float32)
        except (TypeError, ValueError):
            raise _Malformed(f"annotation {ann.get('id')}'s keypoints are not numbers") from None
        if kps.size != 51:
            raise _Malformed(f"annotation {ann.get('id')} has {kps.size} keypoint values, not 51")
        if not np.isfinite(kps).all():
            raise _Malformed(f"annotation {ann.get('id')} has a keypoint that is not finite")
        kps = kps.reshape(17, 3)
        try:
            if ann.get("iscrowd", 0) or not (kps[:, 2] > 0).any():
                mask |= _ignore_mask(ann, info, dec, size)
            else:
                people.append(kps)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise _Malformed(
                f"annotation {ann.get('id')}'s segmentation or bbox is malformed "
                f"({type(exc).__name__})"
            ) from None
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


def _tensor_digest(blob: dict[str, Any]) -> str:
    """SHA-256 over the cached tensors' bytes (in :data:`_TENSORS` order): cheap beside decoding."""
    h = hashlib.sha256()
    for k in _TENSORS:
        h.update(np.ascontiguousarray(blob[k].numpy()).data)
    return h.hexdigest()


def _cache_damage(blob: Any) -> str | None:
    """What is wrong with a loaded cache blob (shapes that disagree, a digest that differs)."""
    if not isinstance(blob, dict) or any(not torch.is_tensor(blob.get(k)) for k in _TENSORS):
        return "not a kdtune data cache"
    n = blob["images"].shape[0]
    expected = {
        "images": (n, 3, *blob["images"].shape[2:]),
        "masks": (n, *blob["images"].shape[2:]),
        "image_ids": (n,),
        "scales": (n,),
        "pads": (n, 2),
    }
    for k, shape in expected.items():
        if tuple(blob[k].shape) != shape:
            return f"{k} is {tuple(blob[k].shape)}, expected {shape}"
    if blob["keypoints"].shape[0] != n:
        return f"keypoints hold {blob['keypoints'].shape[0]} images, images {n}"
    if "digest" in blob and _tensor_digest(blob) != blob["digest"]:
        return "its tensors' SHA-256 differs from the one recorded"
    return None


def _read_cache(path: Path, ann_path: Path, say: Say) -> tuple[PoseSet, list[str]] | None:
    """The cached set and its notes of images left out, or None when absent, of another
    format, or damaged (said in one line; it is then decoded again)."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        problem = None if blob.get("format") == CACHE_FORMAT else "format"
    except Exception as exc:  # a truncated or foreign file: decoded again
        blob, problem = None, f"unreadable: {type(exc).__name__}"
    if problem == "format":
        return None  # an older layout, not damage: decoded again quietly
    problem = problem or _cache_damage(blob)
    if problem is not None or blob is None:
        say(f"data: cache {path} is damaged ({problem}); decoding the split again")
        return None
    poses = PoseSet(
        **{k: blob[k] for k in _TENSORS},
        ann_file=str(ann_path.resolve()),
        split=str(blob["split"]),
        skipped=int(blob["skipped"]),
    )
    return poses, [str(note) for note in blob.get("skipped_notes", [])]


def _write_cache(path: Path, poses: PoseSet, notes: list[str] | None = None) -> None:
    """Save atomically: a temporary file in the same folder, then ``os.replace``; a full disk
    leaves what was there and says so in one line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob: dict[str, Any] = {k: getattr(poses, k) for k in _TENSORS}
    blob.update(
        format=CACHE_FORMAT,
        ann_file=poses.ann_file,
        split=poses.split,
        skipped=poses.skipped,
        skipped_notes=list(notes or []),
    )
    blob["digest"] = _tensor_digest(blob)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like any file
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if is_disk_full(exc):
            raise disk_full("the decoded split", path, "the data cache is left as it was") from None
        raise

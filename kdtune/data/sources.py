"""The data sources a run's ``data`` can name, and the one way in to a split of any of them.

``data`` is a source's name, with its settings where it has any
(``synthetic-cocolike:unlabelled_joints=0.2``), or else the path of a COCO 2017 root (the
fallback: the data lives where the user says). A generated source is one :class:`DataSource`
record in :data:`SOURCES`: how it writes a COCO root, the version that names what it writes, and
its settings with their ranges and sources. Its root is written once, atomically, under the
cache folder, in a folder named by its version and its settings' digest (so a changed rate is a
different set); every split is then decoded and cached by :func:`kdtune.data.coco.load_split`.

This module imports nothing heavy at load time: :class:`kdtune.config.TrainConfig` checks a
run's ``data`` with :func:`check_data` before anything is decoded.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdtune.errors import KdtuneError
from kdtune.paths import cache_dir as default_cache_dir
from kdtune.paths import file_lock

if TYPE_CHECKING:
    from kdtune.data.poseset import PoseSet

SYNTHETIC = "synthetic"
SYNTHETIC_DIR = "synthetic-v3"  # bump with any change to the default synthetic set
SYNTHETIC_COCOLIKE = "synthetic-cocolike"
# bump with any change to how the defects are drawn (kdtune.data.cocolike)
COCOLIKE_VERSION = "cocolike-v1"


@dataclass(frozen=True)
class Setting:
    """One setting of a source: its default, its valid range and where the default comes from."""

    name: str
    default: float
    low: float  # inclusive
    high: float | None  # exclusive; None: no upper bound
    source: str
    integer: bool = False

    def check(self, source: str, raw: str) -> float:
        """``raw`` (text) as this setting's value, or a one-line KdtuneError."""
        where = f"data: {source}: {self.name}"
        try:
            value = float(raw)
        except ValueError:
            raise KdtuneError(f"{where} must be a number, got {raw!r}") from None
        if self.integer and not (math.isfinite(value) and value == int(value)):
            raise KdtuneError(f"{where} must be an integer, got {raw!r}")
        top = "∞" if self.high is None else f"{self.high:g}"
        if not (
            math.isfinite(value) and self.low <= value and (self.high is None or value < self.high)
        ):
            raise KdtuneError(f"{where} must be in [{self.low:g}, {top}), got {raw!r}")
        return float(int(value)) if self.integer else value


@dataclass(frozen=True)
class DataSource:
    """A named source of COCO-layout data that kdtune writes itself.

    ``write(out, settings, cache)`` writes the whole COCO root (``annotations/`` and the
    ``{split}2017/`` image folders) at ``out``; ``cache`` is the cache folder, where it may find
    other sources' roots (:func:`source_root`). ``version`` names what it writes: bump it with
    any change to it. ``shipped_teachers``: kdtune ships teachers trained on it.
    """

    name: str
    summary: str
    version: str
    write: Callable[[Path, Mapping[str, float], Path], None]
    settings: tuple[Setting, ...] = ()
    shipped_teachers: bool = False
    splits: tuple[str, ...] = field(default=("train", "val", "test"))


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``data`` string: the source and every setting's value (defaults filled in)."""

    source: DataSource
    values: dict[str, float]

    @property
    def canonical(self) -> str:
        """The source's name with every setting spelled out, in the table's order."""
        if not self.source.settings:
            return self.source.name
        items = ",".join(f"{s.name}={self.values[s.name]:g}" for s in self.source.settings)
        return f"{self.source.name}:{items}"

    @property
    def folder(self) -> str:
        """The cache folder of its COCO root: the version, plus its settings' digest."""
        if not self.source.settings:
            return self.source.version
        return f"{self.source.version}-{_digest(self.canonical)[:12]}"


# ----------------------------------------------------------------------------- the sources


def _write_synthetic(out: Path, settings: Mapping[str, float], cache: Path) -> None:
    from kdtune.data import synth

    del settings, cache
    synth.write_synthetic(out)


def _write_cocolike(out: Path, settings: Mapping[str, float], cache: Path) -> None:
    """The synthetic default's images (linked, not copied) with defects in its training labels
    only; validation and test labels are copied clean."""
    from kdtune.data.cocolike import Defects, add_defects

    base = source_root(SYNTHETIC, cache)
    (out / "annotations").mkdir(parents=True)
    for split in SOURCES[SYNTHETIC].splits:
        os.symlink(os.path.relpath(base / f"{split}2017", out), out / f"{split}2017")
        name = f"person_keypoints_{split}2017.json"
        if split != "train":  # the same clean file: evaluated as the default's own
            os.symlink(os.path.relpath(base / "annotations" / name, out / "annotations"),
                       out / "annotations" / name)  # fmt: skip
            continue
        doc = json.loads((base / "annotations" / name).read_bytes())
        defects = Defects(
            jitter=settings["jitter"],
            unlabelled_joints=settings["unlabelled_joints"],
            unannotated_persons=settings["unannotated_persons"],
            seed=int(settings["seed"]),
        )
        text = json.dumps(add_defects(doc, defects), separators=(",", ":"))
        (out / "annotations" / name).write_text(text)


def _cocolike_settings() -> tuple[Setting, ...]:
    from kdtune.data.cocolike import SOURCES as WHY

    return (
        Setting("jitter", 1.0, 0.0, None, WHY["jitter"]),
        Setting("unlabelled_joints", 0.15, 0.0, 1.0, WHY["unlabelled_joints"]),
        Setting("unannotated_persons", 0.10, 0.0, 1.0, WHY["unannotated_persons"]),
        Setting("seed", 0, 0.0, None, WHY["seed"], integer=True),
    )


SOURCES: dict[str, DataSource] = {
    SYNTHETIC: DataSource(
        name=SYNTHETIC,
        summary="kdtune's synthetic people, perfect labels (the default)",
        version=SYNTHETIC_DIR,
        write=_write_synthetic,
        shipped_teachers=True,
    ),
    SYNTHETIC_COCOLIKE: DataSource(
        name=SYNTHETIC_COCOLIKE,
        summary=(
            "the synthetic default's images; training labels with COCO's defects "
            "(annotator jitter, unlabelled joints, unannotated persons)"
        ),
        version=f"{SYNTHETIC_DIR}-{COCOLIKE_VERSION}",
        write=_write_cocolike,
        settings=_cocolike_settings(),
        shipped_teachers=True,  # the med, at the default settings (kdtune/teachers/<name>/)
    ),
}


# ----------------------------------------------------------------------------- public API


def parse_data(data: str) -> DataSpec | None:
    """The source ``data`` names with its settings checked, or None where ``data`` names no
    source (a COCO root). A bad setting is a one-line KdtuneError."""
    if not isinstance(data, str) or not data.strip():
        raise KdtuneError(f"data: a source name or a COCO root, got {data!r}")
    name, colon, rest = data.partition(":")
    source = SOURCES.get(name.strip())
    if source is None:
        return None
    known = {s.name: s for s in source.settings}
    values = {s.name: float(s.default) for s in source.settings}
    if colon and not known:
        raise KdtuneError(f"data: {source.name} takes no settings, got {data!r}")
    seen: set[str] = set()
    for item in rest.split(",") if colon else []:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in known:
            raise KdtuneError(
                f"data: {source.name}: settings are name=value from "
                f"{', '.join(known)}; got {item.strip()!r}"
            )
        if key in seen:
            raise KdtuneError(f"data: {source.name}: {key} given twice")
        seen.add(key)
        values[key] = known[key].check(source.name, raw.strip())
    return DataSpec(source, values)


def check_data(data: str) -> None:
    """Refuse a ``data`` string that names a source with bad settings (a COCO root is checked
    when it is read)."""
    parse_data(data)


def source_root(data: str, cache: Path) -> Path:
    """The COCO root of the source ``data`` names, written under ``cache`` if missing."""
    spec = parse_data(data)
    if spec is None:
        raise KdtuneError(f"data: {data!r} names no data source ({', '.join(SOURCES)})")
    root = cache / spec.folder
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock"):  # one writer; the others wait, reuse
        if root.is_dir():
            return root
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            spec.source.write(tmp, spec.values, cache)
            os.rename(tmp, root)
        except OSError:
            if not root.is_dir():  # not a lost race with another process: a real failure
                raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root


def data_root(data: str, results: Path | None = None) -> Path:
    """The COCO root ``data`` names: a source's (written where missing) or the path itself."""
    if parse_data(data) is None:
        return Path(data).expanduser()
    return source_root(data, default_cache_dir(results))


def resolve_data(
    data: str,
    split: str,
    input_size: int,
    results: Path | None = None,
    max_images: int | None = None,
    holdout: float = 0.0,
) -> PoseSet:
    """One split of the data ``data`` names (a source or a COCO root), decoded and cached.

    With a ``holdout`` fraction, ``train`` is the train split less its carve (:func:`carve`)
    and :data:`HOLDOUT_SPLIT` is the carve itself (scored against the train annotations)."""
    from dataclasses import replace

    from kdtune.data.coco import load_split

    cache = default_cache_dir(results)
    root = data_root(data, results)
    if split == HOLDOUT_SPLIT or (split == "train" and holdout):
        if not holdout:
            raise KdtuneError(f"data: the {HOLDOUT_SPLIT!r} split needs a holdout fraction")
        part = carve(data, holdout, results)
        ids = part.held if split == HOLDOUT_SPLIT else part.kept
        poses = load_split(
            root, "train", input_size, cache_dir=cache / "data", max_images=max_images,
            image_ids=ids,
        )  # fmt: skip
        return replace(poses, split=split)
    return load_split(root, split, input_size, cache_dir=cache / "data", max_images=max_images)


# ----------------------------------------------------------------------------- held-out carve

HOLDOUT_SPLIT = "holdout"  # the carve of train, as a split name (export's held-out check)
HOLDOUT_SEED = 2017  # the carve is the same for every run, search, export and machine
DEFAULT_HOLDOUT_FRACTION = 0.1  # where the data has no test keypoints
HOLDOUT_MAX = 0.5  # the largest part of the train split a carve may take
_IDS: dict[str, list[int]] = {}


@dataclass(frozen=True)
class Carve:
    """A fixed, seeded held-out part of a data set's train split: ``held`` (never trained on
    by a run whose ``holdout_fraction`` is ``fraction``) and ``kept`` (the rest), image ids,
    sorted. Carves are nested: a smaller fraction's held part lies inside a larger one's."""

    fraction: float
    seed: int
    kept: tuple[int, ...]
    held: tuple[int, ...]

    def record(self) -> dict[str, object]:
        """What a search or an export records of it."""
        return {
            "fraction": self.fraction,
            "seed": self.seed,
            "held_images": len(self.held),
            "kept_images": len(self.kept),
        }


def check_holdout_fraction(value: Any, where: str, *, allow_zero: bool = False) -> float:
    """A held-out fraction of the train split: in (0, HOLDOUT_MAX] (0 too where allowed: no
    carve); anything else is a one-line KdtuneError."""
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and ((0 < value <= HOLDOUT_MAX) or (allow_zero and value == 0))
    )
    if not ok:
        zero = " (or 0: none)" if allow_zero else ""
        raise KdtuneError(
            f"{where}: a fraction of the train split in (0, {HOLDOUT_MAX:g}]{zero}, got {value!r}"
        )
    return float(value)


def carve(data: str, fraction: float, results: Path | None = None) -> Carve:
    """The held-out carve of ``data``'s train split: ``round(fraction · N)`` images (at least
    one, and one kept) drawn by a fixed seed (:data:`HOLDOUT_SEED`) from its N images. Used by
    export's held-out check and by every run with ``holdout_fraction`` (which then never trains
    on them); a confirmation that judges on a held-out part can take the same."""
    import numpy as np

    from kdtune.data.coco import annotation_file, file_digest, image_ids_of

    fraction = check_holdout_fraction(fraction, "holdout_fraction")
    ann = annotation_file(data_root(data, results), "train")
    if not ann.is_file():
        raise KdtuneError(f"data: annotation file {ann} not found")
    digest = file_digest(ann)
    if digest not in _IDS:
        _IDS[digest] = image_ids_of(ann)
    ids = _IDS[digest]
    if len(ids) < 2:
        raise KdtuneError(f"data: {ann} lists {len(ids)} image(s): too few to hold any out")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(ids))
    n = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    held = sorted(ids[i] for i in order[:n])
    kept = sorted(ids[i] for i in order[n:])
    return Carve(fraction, HOLDOUT_SEED, tuple(kept), tuple(held))


def has_test_keypoints(data: str, results: Path | None = None) -> bool:
    """Whether ``data`` has a test split with keypoint annotations (COCO publishes none)."""
    spec = parse_data(data)
    if spec is not None:
        return "test" in spec.source.splits
    from kdtune.data.coco import annotation_file

    return annotation_file(Path(data).expanduser(), "test").is_file()


def data_fingerprint(data: str, results: Path | None = None) -> str:
    """A short, stable hash naming the data: a source's version and settings, or a COCO root's
    annotation files' contents."""
    from kdtune.data.coco import CACHE_FORMAT, file_digest

    del results  # a source is named by its version and settings, not by where it lives
    h = hashlib.sha256()
    h.update(f"cache format {CACHE_FORMAT}|".encode())  # how its images are letterboxed
    spec = parse_data(data)
    if spec is not None:
        h.update(spec.source.version.encode())
        if spec.source.settings:
            h.update(f"|{spec.canonical}".encode())
        return h.hexdigest()[:16]
    root = Path(data).expanduser()
    if not root.is_dir():
        raise KdtuneError(f"data: COCO root {root} not found")
    files = sorted((root / "annotations").glob("person_keypoints_*.json"))
    if not files:
        raise KdtuneError(f"data: no annotations/person_keypoints_*.json under {root}")
    for f in files:
        h.update(f.name.encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()[:16]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()

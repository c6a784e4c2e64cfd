"""Exact teacher targets under augmentation: the teacher's maps stored per augmented view.

A student trained with augmentation must be taught what the teacher says about *the image the
student sees*. Maps computed on un-augmented images and warped afterwards are not that (on a
16×16 grid the warp blurs them; see ``benchmarks/bench_targets.py``). A bank is:

- for each of the ``N`` training images, ``K`` views (scale, rotation, flip: one
  :class:`~kdtune.augment.Affine` each) drawn once from a fixed seed (:func:`view_affines`);
- the teacher run once on each view (the cached letterboxed image re-warped by the view's
  affine with :func:`kdtune.augment.apply`, exactly as the trial warps the student's input);
- its final-stage maps at the student's grid, float16, in memory-mapped ``.npy`` files beside
  the affines, so that concurrent trials share the pages and no worker holds a copy.

A bank is named by everything that shapes it (:class:`BankSpec`: teacher weights, data, split,
image count, K, augmentation ranges, sizes, precision) and built once per search, under a file
lock, into ``<cache>/banks/<hash>``. The trial picks one of the K views per image per epoch.

Sizes: one view holds ``(19 + 38) · G² · 2`` bytes (29,184 at G = 16), so a bank holds
``N · K · 29 KB``: 120 MB for 512 images at K = 8, 957 MB for 4096, 13 GB for COCO train2017's
~56 K images with people.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdtune.augment import Affine, AugmentParams, apply, normalize, sample_affine
from kdtune.data.poseset import PoseSet
from kdtune.errors import KdtuneError, disk_full, is_disk_full
from kdtune.paths import file_lock
from kdtune.skeleton import NUM_HEATMAPS, NUM_PAFS

BANK_FORMAT = 1  # bump when the files or their meaning change
VIEW_SEED = 20_221_024  # the views are the same for every trial, teacher and student
MANIFEST = "bank.json"
_ARRAYS = ("matrix", "flipped", "heat", "paf")
_DIGESTED = ("matrix", "flipped")  # small: their SHA-256 is in the manifest (the maps' sizes)
# a bank is copied into a GPU's memory when it takes at most this fraction of the free memory
# (four trials sharing a GPU each hold their own copy)
RESIDENT_FRACTION = 0.25
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BankSpec:
    """Everything that decides a bank's contents; its hash names the bank's folder."""

    teacher: str  # weights digest (kdtune.models.weights_digest)
    data: str  # data fingerprint (kdtune.data.sources.data_fingerprint)
    split: str
    images: int
    views: int
    aug_scale: tuple[float, float]
    aug_rotate: float
    aug_flip: float
    input_size: int
    teacher_input_size: int
    stride: int
    amp: bool
    format: int = BANK_FORMAT

    @property
    def grid(self) -> int:
        return self.input_size // self.stride

    @property
    def augment(self) -> AugmentParams:
        return AugmentParams(scale=self.aug_scale, rotate=self.aug_rotate, flip=self.aug_flip)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["aug_scale"] = list(self.aug_scale)
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BankSpec:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in names}
        kwargs["aug_scale"] = tuple(kwargs["aug_scale"])
        return cls(**kwargs)

    def mismatch(self, other: BankSpec) -> str | None:
        """The first setting in which ``other`` differs from this spec, in words; None if none."""
        words = {
            "teacher": "teacher weights",
            "data": "data set",
            "split": "split",
            "images": "image count",
            "views": "views per image (teacher_views)",
            "aug_scale": "augmentation scale",
            "aug_rotate": "augmentation rotation",
            "aug_flip": "augmentation flip",
            "input_size": "input size",
            "teacher_input_size": "teacher input size",
            "stride": "stride",
            "amp": "precision (amp)",
            "format": "bank format",
        }
        for name, label in words.items():
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                return f"{label}: built for {theirs!r}, this run needs {mine!r}"
        return None


def view_affines(spec: BankSpec) -> Affine:
    """The ``images × views`` augmentations of a bank, row ``i * views + k`` for view ``k`` of
    image ``i``: the same numbers on every machine, for every trial."""
    generator = torch.Generator(device="cpu").manual_seed(VIEW_SEED)
    return sample_affine(
        spec.images * spec.views, spec.augment, generator, "cpu", input_size=spec.input_size
    )


def run_teacher(
    net: nn.Module, x: torch.Tensor, grid: int, amp: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's final-stage maps for normalised images ``x``, float32, checked to lie on the
    student's ``grid``; bf16 autocast with ``amp``."""
    ctx = (
        torch.autocast(device_type=x.device.type, dtype=torch.bfloat16)
        if amp
        else contextlib.nullcontext()
    )
    with torch.inference_mode(), ctx:
        heat, paf = net(x)[-1]
    want_heat = (x.shape[0], NUM_HEATMAPS, grid, grid)
    want_paf = (x.shape[0], NUM_PAFS, grid, grid)
    if tuple(heat.shape) != want_heat or tuple(paf.shape) != want_paf:
        raise KdtuneError(
            f"teacher: its maps are {list(heat.shape[1:])} and {list(paf.shape[1:])}, "
            f"the student needs [19, {grid}, {grid}] and [38, {grid}, {grid}]"
        )
    return heat.float(), paf.float()


class BankDamaged(KdtuneError):
    """A bank whose files do not match its manifest (sizes, shapes, digests): never taught from."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_facts(folder: Path) -> dict[str, Any]:
    """What a bank's manifest records of its files: every array's size, the small ones' digest."""
    return {
        "bytes": {name: (folder / f"{name}.npy").stat().st_size for name in _ARRAYS},
        "sha256": {name: _sha256(folder / f"{name}.npy") for name in _DIGESTED},
    }


class TeacherBank:
    """An opened bank: the views' affines in memory, the maps memory-mapped read-only; its files
    checked against its manifest (sizes, shapes, the affines' digest) first."""

    def __init__(self, root: Path):
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise BankDamaged(f"teacher bank: no {MANIFEST} in {self.root}")
        try:
            meta = json.loads(manifest.read_text())
            self.spec = BankSpec.from_dict(meta["spec"])
            recorded = meta.get("files")
            if recorded is not None:
                facts = _file_facts(self.root)
                for kind in ("bytes", "sha256"):
                    for name, want in recorded[kind].items():
                        if facts[kind].get(name) != want:
                            got = facts[kind].get(name)
                            what = f"{got} bytes" if kind == "bytes" else "its SHA-256"
                            raise BankDamaged(
                                f"teacher bank: {name}.npy in {self.root} is damaged ({what}, "
                                f"its {MANIFEST} says {want if kind == 'bytes' else 'another'})"
                            )
            arrays = {name: np.load(self.root / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BankDamaged(
                f"teacher bank: {self.root} is not a complete bank ({type(exc).__name__})"
            ) from None
        self.meta = meta
        s = self.spec
        shapes = {
            "matrix": (s.images, s.views, 2, 3),
            "flipped": (s.images, s.views),
            "heat": (s.images, s.views, NUM_HEATMAPS, s.grid, s.grid),
            "paf": (s.images, s.views, NUM_PAFS, s.grid, s.grid),
        }
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise BankDamaged(
                    f"teacher bank: {name}.npy in {self.root} is {arrays[name].shape}, "
                    f"expected {shape}"
                )
        self.matrix = torch.from_numpy(np.array(arrays["matrix"]))
        self.flipped = torch.from_numpy(np.array(arrays["flipped"]))
        self.heat, self.paf = arrays["heat"], arrays["paf"]
        # the maps copied into an accelerator's memory (see resident_on), else None
        self._resident: tuple[torch.Tensor, torch.Tensor] | None = None

    def check(self, spec: BankSpec) -> TeacherBank:
        """Raise a one-line error if this bank was built for anything other than ``spec``."""
        problem = spec.mismatch(self.spec)
        if problem is not None:
            raise KdtuneError(f"teacher bank {self.root}: {problem}")
        return self

    def views(self, index: torch.Tensor, view: torch.Tensor) -> Affine:
        """The affines of view ``view[b]`` of image ``index[b]``."""
        i, k = index.cpu(), view.cpu()
        return Affine(self.matrix[i, k], self.flipped[i, k], self.spec.input_size)

    def resident_on(self, device: torch.device, max_fraction: float = RESIDENT_FRACTION) -> bool:
        """Copy the maps into ``device``'s memory, once, if they take at most ``max_fraction``
        of its free memory; True if they are there. Batches are then gathered on the device,
        with no host copy and no wait per step. On a CPU the memory map already is the cheapest
        (the page cache is shared by every trial process), so nothing is copied."""
        if self._resident is not None:
            return True
        if device.type != "cuda":
            return False
        free, _total = torch.cuda.mem_get_info(device)
        if self.heat.nbytes + self.paf.nbytes > max_fraction * free:
            return False
        self.hold_on(device)
        return True

    def hold_on(self, device: torch.device) -> None:
        """Copy the maps into ``device``'s memory; :meth:`maps` then gathers them there."""
        self._resident = (
            torch.from_numpy(np.array(self.heat)).to(device),
            torch.from_numpy(np.array(self.paf)).to(device),
        )

    def maps(
        self, index: torch.Tensor, view: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's maps for view ``view[b]`` of image ``index[b]``, float32 on ``device``."""
        if self._resident is not None:  # gathered where they live: no host round trip
            on_heat, on_paf = self._resident
            rows, cols = index.to(on_heat.device), view.to(on_heat.device)
            return on_heat[rows, cols].to(device).float(), on_paf[rows, cols].to(device).float()
        i, k = index.cpu().numpy(), view.cpu().numpy()
        heat = torch.from_numpy(np.ascontiguousarray(self.heat[i, k]))
        paf = torch.from_numpy(np.ascontiguousarray(self.paf[i, k]))
        return heat.to(device).float(), paf.to(device).float()

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.iterdir() if f.is_file())


def build_bank(
    teacher: nn.Module,
    data: PoseSet,
    spec: BankSpec,
    root: Path,
    *,
    device: torch.device,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> TeacherBank:
    """Run ``teacher`` (already at the student's grid, e.g. wrapped in
    :class:`~kdtune.models.AtInputSize`) on every view of every image of ``data`` and write the
    bank to ``root`` (atomically: a partial build never looks complete)."""
    if len(data) != spec.images:
        raise KdtuneError(f"teacher bank: {len(data)} images given for a bank of {spec.images}")
    affines = view_affines(spec)
    total = spec.images * spec.views
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        grid = spec.grid
        heat_file = np.lib.format.open_memmap(
            tmp / "heat.npy", "w+", np.float16, (spec.images, spec.views, NUM_HEATMAPS, grid, grid)
        )
        paf_file = np.lib.format.open_memmap(
            tmp / "paf.npy", "w+", np.float16, (spec.images, spec.views, NUM_PAFS, grid, grid)
        )
        # rows i * views + k: views of one image are consecutive, so flat views write through
        heat_out = heat_file.reshape(total, NUM_HEATMAPS, grid, grid)
        paf_out = paf_file.reshape(total, NUM_PAFS, grid, grid)
        teacher = teacher.to(device).eval()
        started = time.perf_counter()
        for start in range(0, total, batch_size):
            rows = torch.arange(start, min(start + batch_size, total))
            images = rows // spec.views
            x, _, _ = apply(
                data.images[images].to(device),
                data.keypoints[images].to(device),
                data.masks[images].to(device),
                affines[rows],
            )
            heat, paf = run_teacher(teacher, x, grid, spec.amp)
            heat_out[start : start + len(rows)] = heat.half().cpu().numpy()
            paf_out[start : start + len(rows)] = paf.half().cpu().numpy()
            if progress is not None:
                progress(start + len(rows), total)
        heat_file.flush()
        paf_file.flush()
        del heat_out, paf_out, heat_file, paf_file
        matrix = affines.matrix.reshape(spec.images, spec.views, 2, 3).numpy()
        np.save(tmp / "matrix.npy", matrix.astype(np.float32))
        np.save(tmp / "flipped.npy", affines.flipped.reshape(spec.images, spec.views).numpy())
        meta = {
            "spec": spec.to_dict(),
            "build_s": round(time.perf_counter() - started, 2),
            "device": str(device),
            "files": _file_facts(tmp),
        }
        (tmp / MANIFEST).write_text(json.dumps(meta, indent=2))
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(
                "the teacher bank", root.parent, "no bank was left half-built, any other is kept"
            ) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TeacherBank(root)


def open_or_build(
    teacher: nn.Module,
    data: PoseSet,
    spec: BankSpec,
    cache: Path,
    *,
    device: torch.device,
    log: Callable[[str], None] | None = None,
) -> TeacherBank:
    """The bank for ``spec`` under ``cache/banks``: opened if built, else built once (other
    processes asking for the same bank wait for it)."""
    say = log or (lambda _m: None)
    root = cache / "banks" / spec.key()
    if (root / MANIFEST).is_file():
        with contextlib.suppress(BankDamaged):  # damaged: rebuilt below, under the lock
            return TeacherBank(root).check(spec)
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock"):
        if root.exists():  # built by another process while we waited, or damaged
            try:
                return TeacherBank(root).check(spec)
            except BankDamaged as exc:
                say(f"{exc}: building it again")  # replaced only once the new one is whole
        total = spec.images * spec.views
        size_mb = total * (NUM_HEATMAPS + NUM_PAFS) * spec.grid**2 * 2 / 1e6
        say(
            f"building the teacher bank: {spec.images} images × {spec.views} views, "
            f"{size_mb:.0f} MB, into {root}"
        )
        bank = build_bank(
            teacher, data, spec, root, device=device, progress=_progress_lines(say, total)
        )
        say(f"teacher bank built in {bank.meta['build_s']:.1f} s")
        return bank.check(spec)


def _progress_lines(say: Callable[[str], None], total: int) -> Progress:
    """A progress callback that says something at every tenth of the work."""
    marks = {max(1, round(total * k / 10)) for k in range(1, 10)}
    started = time.perf_counter()

    def progress(done: int, _total: int) -> None:
        passed = [m for m in marks if m <= done]
        if passed:
            for m in passed:
                marks.discard(m)
            rate = done / max(time.perf_counter() - started, 1e-9)
            say(f"  teacher bank: {done}/{total} views ({rate:.0f} views/s)")

    return progress


def source_maps(
    teacher: nn.Module,
    data: PoseSet,
    *,
    key: list[Any],
    device: torch.device,
    cache: Path,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The approximate ``warped`` mode's source: ``teacher``'s maps (already at the student's
    grid) of every *un-augmented* image of ``data``, computed once and cached on disk (float16)
    under ``cache/teacher_maps``, named by ``key`` (the teacher's digest and sizes) and the data."""
    digest = hashlib.sha256(json.dumps([*key, data.ann_file, data.split, len(data)]).encode())
    path = cache / "teacher_maps" / f"{digest.hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            cached = torch.load(path, map_location=device, weights_only=True)
            heat, paf = cached["heat"], cached["paf"]
            if heat.shape[0] == paf.shape[0] == len(data):
                return heat, paf
            problem = f"{heat.shape[0]} images' maps, the data has {len(data)}"
        except Exception as exc:  # truncated or foreign: computed again
            problem = f"unreadable: {type(exc).__name__}"
        print(
            f"teacher maps: cache {path} is damaged ({problem}); computing them again",
            file=sys.stderr,
            flush=True,
        )
    teacher = teacher.to(device).eval()
    heats, pafs = [], []
    with torch.inference_mode():
        for start in range(0, len(data), 64):
            heat, paf = teacher(normalize(data.images[start : start + 64].to(device)))[-1]
            heats.append(heat.half())
            pafs.append(paf.half())
    heat_all, paf_all = torch.cat(heats), torch.cat(pafs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        torch.save({"heat": heat_all.cpu(), "paf": paf_all.cpu()}, tmp)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full("the teacher's maps", path, "the cache is left as it was") from None
        raise
    os.replace(tmp, path)
    return heat_all, paf_all

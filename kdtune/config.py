"""The configuration of one training run (a trial): plain data, validated, no framework in it.

The same keys appear in ``kdtune train --config FILE``, in the ``train:`` block of a search
space, in the trial's ``config.json`` and in an exported ``best.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from kdtune.errors import KdtuneError

LEVELS: tuple[str, ...] = ("teacher", "first", "second", "chain")
# Which net a level trains, and which net teaches it.
# the nets kdtune builds (kdtune.models), by name; the CLI offers them through kdtune.api
ARCHS: tuple[str, ...] = ("teacher", "med", "tiny")
STUDENT_OF: dict[str, str] = {"teacher": "teacher", "first": "med", "second": "tiny"}
# The nets, by the names a person and a checkpoint use (kdtune.models.ARCHS builds them).
NETS: tuple[str, ...] = ("teacher", "med", "tiny")
# The splits of kdtune's data sets (ROOT/annotations/person_keypoints_<split>2017.json).
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Where a run trains (TrainConfig.device).
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
TEACHER_OF: dict[str, str | None] = {"teacher": None, "first": "teacher", "second": "med"}
# How kdtune finds a teacher when none is given: "auto" takes a shipped one where it fits the
# data (kdtune.teachers), else trains one by the reference recipe.
TEACHER_RECIPES: tuple[str, ...] = ("auto", "shipped", "reference", "ground_truth")
# Where a student's teacher targets come from (see kdtune.bank): "bank" (exact, cached per
# augmented view), "live" (exact, the teacher run on every batch) or "warped" (approximate: maps
# of the un-augmented image, warped; kept for comparison).
TEACHER_TARGETS: tuple[str, ...] = ("bank", "live", "warped")
# How lr follows batch_size (see TrainConfig.scaled_lr); lr is given for this batch size.
LR_SCALINGS: tuple[str, ...] = ("none", "sqrt", "linear")
LR_REFERENCE_BATCH = 16
# How maps are decoded into persons when a net is evaluated: "kdtune" (kdtune.decode, tuned for
# 128 × 128 inputs) or "reference" (kdtune.decode_reference: the reference pipeline's own
# peak extraction and grouping, so that AP figures compare with the reference's).
DECODERS: tuple[str, ...] = ("kdtune", "reference")
# `teacher_input_size: auto`: the size the teacher's checkpoint was trained at
TEACHER_INPUT_AUTO = "auto"
# The reference pipeline's hand-picked ratios (alpha = ground-truth weight).
REFERENCE_ALPHA: dict[str, float] = {"first": 0.3, "second": 0.25}
# The reference document's named scenarios, as β schedules: α/β 1.0/0.0, 0.5/0.5, 0.25/0.75,
# 0.1/0.9, 0.0/1.0, and its adaptive β 0.9 → 0.5 (a search's warm start measures them first).
NAMED_SCENARIOS: tuple[str, ...] = (
    "fixed:0",
    "fixed:0.5",
    "fixed:0.75",
    "fixed:0.9",
    "fixed:1",
    "linear:0.9:0.5",
)


@dataclass
class TrainConfig:
    """Everything one run needs. ``schedule`` is a β schedule spec (see :mod:`kdtune.schedules`).

    For ``level == "chain"``, ``schedule`` weights the first level and ``schedule_second`` the
    second; elsewhere ``schedule_second`` is unused.
    """

    level: str = "second"
    schedule: str = "fixed:0.75"  # beta = distillation weight; alpha = 1 - beta
    schedule_second: str = "fixed:0.75"
    data: str = "synthetic"
    epochs: int = 10
    batch_size: int = 16
    lr: float = 4e-3
    weight_decay: float = 0.0
    eval_every: int = 1
    decoder: str = "kdtune"  # how evaluations decode maps: kdtune | reference (see DECODERS)
    seed: int = 0
    # the seed of the data order and the views (None: ``seed``); runs that share it train on the
    # same batches (a population's members: kdtune.population_fit)
    data_seed: int | None = None
    input_size: int = 128
    stride: int = 8
    sigma: float = 7.0
    paf_thickness: float = 1.0
    # augmentation
    aug_scale: tuple[float, float] = (0.75, 1.25)
    aug_rotate: float = 20.0  # degrees, uniform in [-r, r]
    aug_flip: float = 0.5  # probability
    # teachers: a checkpoint path, or kdtune trains one (cached under results/cache/teachers)
    teacher_checkpoint: str | None = None
    teacher_epochs: int = 20  # when kdtune must train the teacher itself
    # how kdtune finds a missing teacher: "auto" (a shipped teacher where one fits the data, else
    # "reference"), "shipped" (only a shipped one), "reference" as the reference pipeline did
    # (the med teacher distilled from a Lightweight-OpenPose teacher at alpha 0.3), or
    # "ground_truth" (the teacher net trained on the ground truth alone: quicker)
    teacher_recipe: str = "auto"
    # the teacher's input: "auto" takes the size its checkpoint was trained at (368 for the
    # public Lightweight-OpenPose layout, the recorded input_size for kdtune's own; see
    # kdtune.models.settle_teacher_input_size); an explicit size must agree with it
    teacher_input_size: int | str = TEACHER_INPUT_AUTO
    teacher_targets: str = "bank"  # bank | live | warped (see TEACHER_TARGETS)
    teacher_views: int = 8  # K: augmented views per training image in the bank
    teacher_bank: str | None = None  # a bank folder to use; else found or built in the cache
    # execution
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = False  # bf16 autocast
    channels_last: bool = True  # much faster on CPUs (oneDNN) as well as GPUs
    num_threads: int | None = None  # torch threads; None leaves torch's default
    torch_compile: bool = False  # compile the student's training step (about a minute to start)
    sync_every: int = 50  # the host reads the training loss every N steps (1: after every step)
    # evaluate and deliver an exponential moving average of the weights (decay per step, in
    # [0, 1); 0: off, the trained weights themselves)
    ema_decay: float = 0.0
    # the learning rate at another batch size: lr x f(batch_size / LR_REFERENCE_BATCH), f the
    # identity ("linear"), its square root ("sqrt") or 1 ("none"); see the README's GPU section
    lr_scaling: str = "none"
    max_train_images: int | None = None
    max_val_images: int | None = None
    val_split: str = "val"
    # the fraction of the train split carved out as a fixed, seeded held-out part (never
    # trained on; export's held-out check where the data has no test keypoints): 0 = none,
    # else in (0, 0.5] (see kdtune.data.sources.carve)
    holdout_fraction: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # free-form labels carried along

    @property
    def alpha(self) -> float | None:
        """The ground-truth weight when the schedule is fixed, else None."""
        from kdtune.schedules import parse_schedule

        return parse_schedule(self.schedule).alpha

    @property
    def scaled_lr(self) -> float:
        """The learning rate the optimizer gets: ``lr`` scaled to ``batch_size`` by
        ``lr_scaling`` from the reference batch of 16."""
        ratio = self.batch_size / LR_REFERENCE_BATCH
        factor = {"none": 1.0, "sqrt": math.sqrt(ratio), "linear": ratio}[self.lr_scaling]
        return self.lr * factor

    def validate(self) -> TrainConfig:
        from kdtune.data.sources import check_data, check_holdout_fraction
        from kdtune.schedules import parse_schedule

        if self.level not in LEVELS:
            raise KdtuneError(
                f"level: unknown level {self.level!r} (choose from {', '.join(LEVELS)})"
            )
        parse_schedule(self.schedule)
        check_data(self.data)
        if self.level == "chain":
            parse_schedule(self.schedule_second)
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("eval_every", self.eval_every)
        _positive_int("teacher_epochs", self.teacher_epochs)
        _positive_int("input_size", self.input_size)
        _positive_int("stride", self.stride)
        if self.teacher_input_size != TEACHER_INPUT_AUTO:
            _positive_int("teacher_input_size", self.teacher_input_size)
        _positive_int("teacher_views", self.teacher_views)
        _positive_int("sync_every", self.sync_every)
        decay = self.ema_decay
        if isinstance(decay, bool) or not (isinstance(decay, int | float) and 0 <= decay < 1):
            raise KdtuneError(f"ema_decay: a number in [0, 1) (0: off), got {self.ema_decay!r}")
        if self.lr_scaling not in LR_SCALINGS:
            raise KdtuneError(
                f"lr_scaling: one of {', '.join(LR_SCALINGS)}, got {self.lr_scaling!r}"
            )
        check_holdout_fraction(self.holdout_fraction, "holdout_fraction", allow_zero=True)
        if isinstance(self.teacher_input_size, int) and self.teacher_input_size % self.stride:
            raise KdtuneError(
                f"teacher_input_size: {self.teacher_input_size} must be a multiple of stride "
                f"{self.stride}, or the teacher's maps do not fall on the student's grid"
            )
        if self.teacher_targets not in TEACHER_TARGETS:
            raise KdtuneError(
                f"teacher_targets: one of {', '.join(TEACHER_TARGETS)}, "
                f"got {self.teacher_targets!r}"
            )
        for name in ("num_threads", "max_train_images", "max_val_images"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if self.data_seed is not None and self.data_seed < 0:
            raise KdtuneError(f"data_seed: must be >= 0, got {self.data_seed!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise KdtuneError(f"lr: must be a positive number, got {self.lr!r}")
        if self.input_size % self.stride or self.input_size < 4 * self.stride:
            raise KdtuneError(
                f"input_size: {self.input_size} must be a multiple of stride {self.stride} "
                f"and at least {4 * self.stride}"
            )
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise KdtuneError(f"sigma: must be positive, got {self.sigma!r}")
        lo, hi = self.aug_scale
        if not 0 < lo <= hi:
            raise KdtuneError(f"aug_scale: need 0 < low <= high, got {self.aug_scale!r}")
        if not 0 <= self.aug_flip <= 1:
            raise KdtuneError(f"aug_flip: a probability in [0, 1], got {self.aug_flip!r}")
        if self.teacher_recipe not in TEACHER_RECIPES:
            raise KdtuneError(
                f"teacher_recipe: one of {', '.join(TEACHER_RECIPES)}, got {self.teacher_recipe!r}"
            )
        if self.decoder not in DECODERS:
            raise KdtuneError(f"decoder: one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise KdtuneError(f"device: one of auto, cpu, cuda, got {self.device!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["aug_scale"] = list(self.aug_scale)
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, where: str = "config") -> TrainConfig:
        """Build and validate from plain data; unknown keys and bad values raise KdtuneError."""
        if not isinstance(raw, dict):
            raise KdtuneError(f"{where}: expected a mapping, got {type(raw).__name__}")
        raw = dict(raw)
        if "alpha" in raw:
            alpha = raw.pop("alpha")
            raw["schedule"] = alpha_to_schedule(alpha, where=f"{where}: alpha")
        if "alpha_second" in raw:
            raw["schedule_second"] = alpha_to_schedule(
                raw.pop("alpha_second"), where=f"{where}: alpha_second"
            )
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise KdtuneError(f"{where}: unknown key {unknown[0]!r}")
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            default = getattr(cls(), key)
            kwargs[key] = _coerce(key, value, default, where)
        try:
            return cls(**kwargs).validate()
        except KdtuneError as exc:
            raise KdtuneError(f"{where}: {exc}") from None


def alpha_to_schedule(alpha: Any, *, where: str = "alpha") -> str:
    """``alpha`` (ground-truth weight) as a fixed β schedule spec; out of [0, 1] is an error."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha):
        raise KdtuneError(f"{where}: must be a number in [0, 1], got {alpha!r}")
    if not 0.0 <= alpha <= 1.0:
        raise KdtuneError(f"{where}: must be in [0, 1], got {alpha!r}")
    return f"fixed:{round(1.0 - float(alpha), 10):g}"


_OPTIONAL = ("teacher_checkpoint", "teacher_bank", "num_threads")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise KdtuneError(f"{name}: must be a positive integer, got {value!r}")


def _coerce(key: str, value: Any, default: Any, where: str) -> Any:
    """Check a value against the type of its default; ints are accepted for floats."""
    if value is None:
        if default is None or key in _OPTIONAL:
            return None
        raise KdtuneError(f"{where}: {key}: must not be empty")
    if key == "teacher_input_size":  # "auto" or a size in pixels
        if value == TEACHER_INPUT_AUTO or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise KdtuneError(
            f"{where}: {key}: must be {TEACHER_INPUT_AUTO!r} or an integer, got {value!r}"
        )
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise KdtuneError(f"{where}: {key}: must be true or false, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise KdtuneError(f"{where}: {key}: must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            raise KdtuneError(f"{where}: {key}: {value!r} is out of range") from None
        if not math.isfinite(number):
            raise KdtuneError(f"{where}: {key}: must be finite, got {value!r}")
        return number
    if isinstance(default, int) or key in (
        "num_threads",
        "max_train_images",
        "max_val_images",
        "data_seed",
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise KdtuneError(f"{where}: {key}: must be an integer, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not (isinstance(value, list | tuple) and len(value) == 2) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            raise KdtuneError(f"{where}: {key}: must be a pair of numbers, got {value!r}")
        try:
            return (float(value[0]), float(value[1]))
        except OverflowError:
            raise KdtuneError(f"{where}: {key}: {value!r} is out of range") from None
    if isinstance(default, str) or key in ("teacher_checkpoint", "teacher_bank"):
        if not isinstance(value, str):
            raise KdtuneError(f"{where}: {key}: must be a string, got {value!r}")
        return value
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise KdtuneError(f"{where}: {key}: must be a mapping, got {value!r}")
        return value
    return value

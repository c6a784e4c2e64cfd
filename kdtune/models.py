"""The three nets of the distillation chain and the loading of their checkpoints.

- ``teacher``: Lightweight OpenPose (MobileNet-v1 backbone, CPM, an initial stage and refinement
  stages). Its module tree, and so its ``state_dict`` keys, follow the public checkpoint
  ``checkpoint_iter_370000.pth`` (``model.*``, ``cpm.*``, ``initial_stage.*``,
  ``refinement_stages.0.*``), which loads into it as is.
- ``med`` and ``tiny``: plain conv+BN+ReLU stacks with two max-pools, a small CPM and two heads.

Every net maps ``x [B, 3, H, W]`` (float) to a list with one ``(heatmaps [B, 19, H/8, W/8],
pafs [B, 38, H/8, W/8])`` pair per stage: the teacher returns one per stage (initial plus
refinements), the students a one-element list.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdtune.config import ARCHS, TEACHER_INPUT_AUTO, TrainConfig
from kdtune.errors import KdtuneError
from kdtune.skeleton import NUM_HEATMAPS, NUM_PAFS

Stage = tuple[torch.Tensor, torch.Tensor]

ARCH_INFO: dict[str, dict[str, str]] = {
    "teacher": {
        "role": "teacher of the first level",
        "description": (
            "Lightweight OpenPose: MobileNet-v1 backbone, CPM, initial + 1 refinement stage"
        ),
    },
    "med": {
        "role": "student of the first level, teacher of the second",
        "description": "8 conv3x3+BN+ReLU layers (32-128 ch, 2 max-pools), CPM 96 ch, heads 64 ch",
    },
    "tiny": {
        "role": "student of the second level",
        "description": "7 conv3x3+BN+ReLU layers (16-64 ch, 2 max-pools), CPM 48 ch, heads 32 ch",
    },
}


# --------------------------------------------------------------------------- building blocks


def _conv(
    cin: int,
    cout: int,
    kernel: int = 3,
    stride: int = 1,
    dilation: int = 1,
    bn: bool = True,
    relu: bool = True,
    bias: bool = True,
) -> nn.Sequential:
    """Conv (same padding) [+ BN] [+ ReLU], as one ``Sequential`` (keys ``0``, ``1``, ...)."""
    padding = dilation * (kernel - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, bias=bias)
    ]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _conv_dw(
    cin: int, cout: int, stride: int = 1, dilation: int = 1, bn: bool = True
) -> nn.Sequential:
    """Depthwise-separable 3x3 conv: depthwise [+ BN] + act, pointwise [+ BN] + act, no biases.

    With BN the activation is ReLU (MobileNet backbone); without, ELU (the CPM trunk).
    """

    def act() -> nn.Module:
        return nn.ReLU(inplace=True) if bn else nn.ELU(inplace=True)

    def norm(c: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(c)] if bn else []

    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, dilation, dilation=dilation, groups=cin, bias=False),
        *norm(cin),
        act(),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        *norm(cout),
        act(),
    )


def _head(cin: int, hidden: int, cout: int, hidden_bias: bool = True) -> nn.Sequential:
    """1x1 conv + ReLU, then a linear 1x1 conv to the output maps."""
    return nn.Sequential(
        _conv(cin, hidden, kernel=1, bn=False, bias=hidden_bias),
        _conv(hidden, cout, kernel=1, bn=False, relu=False),
    )


# --------------------------------------------------------------------------- teacher


class Cpm(nn.Module):
    """Align to ``cout`` channels, a residual trunk of 3 depthwise-separable ELU convs, a
    3x3 conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.align = _conv(cin, cout, kernel=1, bn=False)
        self.trunk = nn.Sequential(*(_conv_dw(cout, cout, bn=False) for _ in range(3)))
        self.conv = _conv(cout, cout, bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.align(x)
        return self.conv(x + self.trunk(x))


class InitialStage(nn.Module):
    """Three 3x3 convs, then a heatmap head and a PAF head (512 hidden channels each)."""

    def __init__(self, channels: int, num_heatmaps: int, num_pafs: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*(_conv(channels, channels, bn=False) for _ in range(3)))
        self.heatmaps = _head(channels, 512, num_heatmaps)
        self.pafs = _head(channels, 512, num_pafs)

    def forward(self, x: torch.Tensor) -> Stage:
        x = self.trunk(x)
        return self.heatmaps(x), self.pafs(x)


class RefinementStageBlock(nn.Module):
    """1x1 align, then (3x3 conv+BN+ReLU, dilated 3x3 conv+BN+ReLU) added back to it."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.initial = _conv(cin, cout, kernel=1, bn=False)
        self.trunk = nn.Sequential(_conv(cout, cout), _conv(cout, cout, dilation=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.initial(x)
        return x + self.trunk(x)


class RefinementStage(nn.Module):
    """Five refinement blocks on (features, heatmaps, PAFs), then heatmap and PAF heads."""

    def __init__(self, cin: int, channels: int, num_heatmaps: int, num_pafs: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            RefinementStageBlock(cin, channels),
            *(RefinementStageBlock(channels, channels) for _ in range(4)),
        )
        self.heatmaps = _head(channels, channels, num_heatmaps)
        self.pafs = _head(channels, channels, num_pafs)

    def forward(self, x: torch.Tensor) -> Stage:
        x = self.trunk(x)
        return self.heatmaps(x), self.pafs(x)


class Teacher(nn.Module):
    """Lightweight OpenPose; key names match the public ``checkpoint_iter_370000.pth``."""

    def __init__(
        self,
        num_refinement_stages: int = 1,
        channels: int = 128,
        num_heatmaps: int = NUM_HEATMAPS,
        num_pafs: int = NUM_PAFS,
    ) -> None:
        super().__init__()
        self.model = nn.Sequential(  # MobileNet-v1, stride 8, dilated at the end
            _conv(3, 32, stride=2, bias=False),
            _conv_dw(32, 64),
            _conv_dw(64, 128, stride=2),
            _conv_dw(128, 128),
            _conv_dw(128, 256, stride=2),
            _conv_dw(256, 256),
            _conv_dw(256, 512),
            _conv_dw(512, 512, dilation=2),
            *(_conv_dw(512, 512) for _ in range(4)),
        )
        self.cpm = Cpm(512, channels)
        self.initial_stage = InitialStage(channels, num_heatmaps, num_pafs)
        self.refinement_stages = nn.ModuleList(
            RefinementStage(channels + num_heatmaps + num_pafs, channels, num_heatmaps, num_pafs)
            for _ in range(num_refinement_stages)
        )
        _init_weights(self, [self.initial_stage, *self.refinement_stages])

    def forward(self, x: torch.Tensor) -> list[Stage]:
        features = self.cpm(self.model(x))
        stages = [self.initial_stage(features)]
        for stage in self.refinement_stages:
            heat, paf = stages[-1]
            stages.append(stage(torch.cat([features, heat, paf], dim=1)))
        return stages


# --------------------------------------------------------------------------- students


class Student(nn.Module):
    """A plain conv+BN+ReLU stack at stride 8, a small CPM and two heads; one output stage.

    ``widths`` lists the backbone's 3x3 layers' output channels: the first has stride 2 and
    2x2 max-pools come before the 4th and the 6th. ``cpm`` lists (channels, kernel) layers.
    """

    def __init__(self, widths: list[int], cpm: list[tuple[int, int]], head: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate(widths):
            if i in (3, 5):
                layers.append(nn.MaxPool2d(2))
            layers.append(_conv(cin, cout, stride=2 if i == 0 else 1, bias=False))
            cin = cout
        self.backbone = nn.Sequential(*layers)
        cpm_layers: list[nn.Module] = []
        for cout, kernel in cpm:
            cpm_layers.append(_conv(cin, cout, kernel=kernel, bias=False))
            cin = cout
        self.cpm = nn.Sequential(*cpm_layers)
        channels = cin
        self.heatmaps = _head(channels, head, NUM_HEATMAPS)
        self.pafs = _head(channels, head, NUM_PAFS)
        _init_weights(self, [self])

    def forward(self, x: torch.Tensor) -> list[Stage]:
        x = self.cpm(self.backbone(x))
        return [(self.heatmaps(x), self.pafs(x))]


def _init_weights(net: nn.Module, heads_in: list[nn.Module]) -> None:
    """Kaiming-normal convs (fan-in: right for depthwise layers too), unit BN, zero biases.

    The final 1x1 layer of every head starts near zero, so early outputs are small.
    """
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for owner in heads_in:
        for head in (owner.get_submodule("heatmaps"), owner.get_submodule("pafs")):
            last = [m for m in head.modules() if isinstance(m, nn.Conv2d)][-1]
            nn.init.normal_(last.weight, std=1e-3)


# --------------------------------------------------------------------------- public API


def build_model(arch: str) -> nn.Module:
    """A freshly initialised ``teacher``, ``med`` or ``tiny`` net."""
    if arch == "teacher":
        return Teacher(num_refinement_stages=1)
    if arch == "med":
        return Student(
            widths=[32, 32, 64, 64, 96, 96, 128, 128], cpm=[(96, 1), (96, 3), (96, 3)], head=64
        )
    if arch == "tiny":
        return Student(widths=[16, 24, 32, 32, 48, 48, 64], cpm=[(48, 1), (48, 3)], head=32)
    raise KdtuneError(f"arch: unknown model {arch!r} (choose from {', '.join(ARCHS)})")


def count_parameters(model: nn.Module) -> int:
    """The number of parameters of ``model`` (trainable or not; BN buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def describe_models() -> list[dict[str, Any]]:
    """One row per arch: ``name``, ``params`` (counted on a fresh net), ``role``,
    ``description``."""
    return [
        {"name": arch, "params": count_parameters(build_model(arch)), **ARCH_INFO[arch]}
        for arch in ARCHS
    ]


def load_checkpoint(
    path: str | Path, arch: str, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Build ``arch``, load the checkpoint at ``path`` into it, on ``map_location``, in eval mode.

    Accepts a raw ``state_dict``, the public format ``{'state_dict': ...}`` and kdtune's own
    ``{'model': ..., 'arch': ...}``; a leading ``module.`` on the keys is stripped. Anything
    that does not fit raises :class:`KdtuneError` with a one-line reason.

    A teacher in the public format (``checkpoint_iter_370000.pth``: ``state_dict``, no kdtune
    ``arch``) was trained on other input, so it comes back wrapped in :class:`PublicInput`:
    every consumer (bank, live targets, evaluation) feeds it what it was trained on.
    """
    model = build_model(arch)
    path = Path(path)
    if not path.is_file():
        raise KdtuneError(f"checkpoint: no such file {str(path)!r}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise KdtuneError(
            f"checkpoint {str(path)!r}: not a readable checkpoint ({_load_failure(exc)})"
        ) from None
    if isinstance(obj, Mapping) and isinstance(obj.get("arch"), str) and obj["arch"] != arch:
        raise KdtuneError(f"checkpoint {str(path)!r} holds a {obj['arch']!r} model, not {arch!r}")
    state = _state_dict_of(obj, path)
    _check_fits(model, state, path, arch)
    model.load_state_dict(state)
    if arch == "teacher" and is_public_layout(obj):
        model = PublicInput(model)
    return model.to(map_location).eval()


def is_public_layout(obj: object) -> bool:
    """Whether a loaded checkpoint has the public Lightweight-OpenPose layout (``state_dict``
    and no ``arch``, which every checkpoint kdtune writes carries)."""
    return isinstance(obj, Mapping) and "state_dict" in obj and "arch" not in obj


# ------------------------------------------------------------- a checkpoint's own input size

PUBLIC_INPUT_SIZE = 368  # what the public Lightweight-OpenPose checkpoint was trained at
_TRAINED_AT: dict[tuple[str, int, int], tuple[int, str]] = {}


def trained_input_size(path: str | Path) -> tuple[int, str]:
    """The input size the checkpoint at ``path`` was trained at, and what it is in words: 368
    for the public Lightweight-OpenPose layout, the ``input_size`` recorded in kdtune's own
    (its default where none is recorded, as in the shipped teachers)."""
    path = Path(path)
    if not path.is_file():
        raise KdtuneError(f"checkpoint: no such file {str(path)!r}")
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _TRAINED_AT:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise KdtuneError(
                f"checkpoint {str(path)!r}: not a readable checkpoint ({_load_failure(exc)})"
            ) from None
        if is_public_layout(obj):
            found = (PUBLIC_INPUT_SIZE, f"public layout, trained at {PUBLIC_INPUT_SIZE}")
        else:
            config = obj.get("config") if isinstance(obj, Mapping) else None
            size = config.get("input_size") if isinstance(config, Mapping) else None
            if isinstance(size, int) and not isinstance(size, bool):
                found = (size, f"kdtune's own checkpoint, trained at {size}")
            else:
                size = TrainConfig().input_size
                found = (size, f"a kdtune-layout checkpoint, trained at kdtune's {size}")
        _TRAINED_AT[memo] = found
    return _TRAINED_AT[memo]


def settle_teacher_input_size(cfg: TrainConfig, teacher: str | Path) -> TrainConfig:
    """``cfg`` with its ``teacher_input_size`` settled for the checkpoint ``teacher``: ``auto``
    becomes the size the checkpoint was trained at; an explicit size that contradicts it is a
    one-line KdtuneError (a net fed another size than it learnt at teaches wrong maps)."""
    size, what = trained_input_size(teacher)
    if cfg.teacher_input_size == TEACHER_INPUT_AUTO:
        from dataclasses import replace

        return replace(cfg, teacher_input_size=size).validate()
    if cfg.teacher_input_size != size:
        raise KdtuneError(
            f"teacher_input_size: {cfg.teacher_input_size} contradicts the teacher "
            f"{str(teacher)!r} ({what}); give {size} or leave it {TEACHER_INPUT_AUTO}"
        )
    return cfg


def _load_failure(exc: Exception) -> str:
    """A short, one-line reason why ``torch.load`` refused a file."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    if text.startswith("Weights only load failed"):
        return "it holds objects other than tensors and plain data, refused by weights_only loading"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:200]


def _state_dict_of(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint, ``module.`` prefixes stripped."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise KdtuneError(f"checkpoint {str(path)!r}: no state_dict of tensors in it")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, arch: str) -> None:
    """Raise a one-line :class:`KdtuneError` listing missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [
        f"{len(items)} {what} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
        for what, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (checkpoint vs model)", shapes),
        )
        if items
    ]
    raise KdtuneError(f"checkpoint {str(path)!r} does not fit arch {arch!r}: {'; '.join(parts)}")


# --------------------------------------------------------------------------- wrappers


class PublicInput(nn.Module):
    """A net trained on the public Lightweight-OpenPose input, fed kdtune's.

    kdtune's nets eat RGB ``x = u / 255 - 0.5`` (``u`` the uint8 pixel); the public checkpoint
    was trained on BGR ``(u - 128) / 256``. The conversion is exact and per pixel, so it commutes
    with any resizing in front of it (:class:`AtInputSize`).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> list[Stage]:
        pixels = (x + 0.5) * 255.0
        return self.net(((pixels - 128.0) / 256.0).flip(1))


class AtInputSize(nn.Module):
    """A net fed its input resized to ``size`` (the reference fed its teacher 368×368) whose
    maps come back resized to the student's ``grid`` (``None``: at the net's own grid, which
    decoding prefers: 46×46 shrunk to 16×16 loses half an ideal peak's height)."""

    def __init__(self, net: nn.Module, size: int, grid: int | None):
        super().__init__()
        self.net, self.size, self.grid = net, size, grid

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
        return [(self._grid(h), self._grid(p)) for h, p in self.net(x)]

    def _grid(self, maps: torch.Tensor) -> torch.Tensor:
        if self.grid is None or maps.shape[-1] == self.grid:
            return maps
        return F.interpolate(
            maps, size=(self.grid, self.grid), mode="bilinear", align_corners=False
        )


def weights_digest(model: nn.Module) -> str:
    """A short hash of a net's weights (names and values): what names a teacher in cache keys."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]

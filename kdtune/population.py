"""A population: P student nets of one architecture trained in lockstep as one net.

Tiny and med students leave a GPU idle per kernel, and kdtune's statistics want many seeds of
the same configurations on the same batches. A population fuses the P members' layers into one
net of grouped convolutions:

- every ``Conv2d(cin, cout, groups=g)`` becomes ``Conv2d(P·cin, P·cout, groups=P·g)`` whose
  weight is the members' weights stacked (member-major channels: member ``m`` owns channels
  ``m·c … (m+1)·c − 1`` of every layer);
- every ``BatchNorm2d(c)`` becomes ``BatchNorm2d(P·c)``: batch norm is per channel, so each
  member keeps its own statistics, exactly as when trained alone;
- ReLU, max-pooling and the residual additions of the students act per channel, untouched.

The input image is repeated P times along the channels, so every member sees the same batch.
The outputs come back as ``[B, P, C, G, G]``. Members share nothing but the batch: a member's
gradient is its own loss's, and :class:`MemberAdam` steps each member with its own learning
rate. A member's weights can be taken out at any time (:func:`member_state`) and loaded into a
plain net of its architecture.

Only the students fuse (``med``, ``tiny``: plain conv stacks); the teacher's refinement stages
concatenate maps along the channels, which would mix the members' channels.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from kdtune.errors import KdtuneError
from kdtune.models import Student

Stage = tuple[torch.Tensor, torch.Tensor]


class Population(nn.Module):
    """P students of one architecture as one net of grouped convolutions."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise KdtuneError("population: no members")
        if not all(isinstance(m, Student) for m in members):
            raise KdtuneError("population: only student nets (med, tiny) can be fused")
        shapes = {tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()) for m in members}
        if len(shapes) != 1:
            raise KdtuneError("population: the members are not of one architecture")
        self.size = len(members)
        self.net = _fused_copy(members)

    def forward(self, x: torch.Tensor) -> list[Stage]:
        """Each member's maps of the same images ``x [B, 3, H, W]``: one ``(heatmaps
        [B, P, 19, G, G], pafs [B, P, 38, G, G])`` pair per stage."""
        stages = self.net(x.repeat(1, self.size, 1, 1))
        return [(_split(h, self.size), _split(p, self.size)) for h, p in stages]


def _split(maps: torch.Tensor, size: int) -> torch.Tensor:
    b, c, h, w = maps.shape
    return maps.view(b, size, c // size, h, w)


def _fused_copy(members: Sequence[nn.Module]) -> nn.Module:
    """The first member's module tree with every conv and batch norm replaced by the fused
    layer of all members' (Student.forward then runs the fused net unchanged)."""
    net = copy.deepcopy(members[0])
    size = len(members)
    for name, module in list(net.named_modules()):
        parts = [m.get_submodule(name) for m in members]
        if isinstance(module, nn.Conv2d):
            _replace(net, name, _fuse_conv(parts, size))
        elif isinstance(module, nn.BatchNorm2d):
            _replace(net, name, _fuse_norm(parts, size))
    return net


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def _fuse_conv(parts: Sequence[nn.Module], size: int) -> nn.Conv2d:
    one = parts[0]
    assert isinstance(one, nn.Conv2d)
    fused = nn.Conv2d(
        size * one.in_channels,
        size * one.out_channels,
        one.kernel_size,  # type: ignore[arg-type]
        one.stride,  # type: ignore[arg-type]
        one.padding,  # type: ignore[arg-type]
        one.dilation,  # type: ignore[arg-type]
        groups=size * one.groups,
        bias=one.bias is not None,
    ).to(one.weight.device, one.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([p.weight for p in parts]))  # type: ignore[misc]
        if fused.bias is not None:
            fused.bias.copy_(torch.cat([p.bias for p in parts]))  # type: ignore[misc]
    return fused


def _fuse_norm(parts: Sequence[nn.Module], size: int) -> nn.BatchNorm2d:
    one = parts[0]
    assert isinstance(one, nn.BatchNorm2d)
    fused = nn.BatchNorm2d(size * one.num_features, one.eps, one.momentum).to(
        one.weight.device, one.weight.dtype
    )
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(fused, name).copy_(torch.cat([getattr(p, name) for p in parts]))
        if fused.num_batches_tracked is not None and one.num_batches_tracked is not None:
            fused.num_batches_tracked.copy_(one.num_batches_tracked)
    return fused


def member_state(population: Population, member: int) -> dict[str, torch.Tensor]:
    """Member ``member``'s own ``state_dict``, loadable into a plain net of its architecture."""
    if not 0 <= member < population.size:
        raise KdtuneError(f"population: no member {member} (size {population.size})")
    state: dict[str, torch.Tensor] = {}
    for key, value in population.net.state_dict().items():
        if value.ndim == 0:  # num_batches_tracked: shared by all members
            state[key] = value.clone()
        else:
            state[key] = value.reshape(population.size, -1, *value.shape[1:])[member].clone()
    return state


def member_losses(
    outputs: Sequence[Stage],
    gt_heat: torch.Tensor,
    gt_paf: torch.Tensor,
    mask: torch.Tensor | None,
    alphas: torch.Tensor,
    teacher_heat: torch.Tensor | None = None,
    teacher_paf: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Each member's loss terms of one batch, as ``kdtune.losses.kd_loss`` computes them for one
    net: ``{'student', 'distill', 'total'}``, each a ``[P]`` tensor; ``alphas [P]`` are the
    members' ground-truth weights. Backpropagating ``total.sum()`` gives every member its own
    loss's gradient (the members share no weight)."""
    gt = _stages_l2(outputs, gt_heat, gt_paf, mask)
    if bool((alphas >= 1.0).all()):
        return {"student": gt, "distill": torch.zeros_like(gt), "total": gt}
    if teacher_heat is None or teacher_paf is None:
        raise ValueError("a member with alpha < 1 needs the teacher's heatmaps and PAFs")
    distill = _stages_l2(outputs, teacher_heat.detach(), teacher_paf.detach(), mask)
    a = alphas.to(gt.device, gt.dtype)
    total = a * gt + (1.0 - a) * distill
    # a member at α = 1 never sees its teacher: its distillation term reads 0, as alone
    distill = torch.where(a >= 1.0, torch.zeros_like(distill), distill)
    return {"student": gt, "distill": distill.detach(), "total": total}


def _stages_l2(
    outputs: Sequence[Stage], heat: torch.Tensor, paf: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Per member: heatmap plus PAF ``sum(mask · (pred − target)²) / 2 / batch`` against one
    target pair (``[B, C, G, G]``, the same for every member), summed over the stages."""
    total: torch.Tensor | None = None
    for h, p in outputs:
        term = _l2(h, heat, mask) + _l2(p, paf, mask)
        total = term if total is None else total + term
    assert total is not None
    return total


def _l2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    diff = pred.float() - target.float().unsqueeze(1)
    sq = diff * diff
    if mask is not None:
        sq = sq * mask.float().unsqueeze(1)
    return sq.sum(dim=(0, 2, 3, 4)) / 2 / pred.shape[0]


class MemberAdam:
    """Adam (with L2 weight decay, as ``torch.optim.Adam``) over a population's fused weights,
    each member stepping at its own learning rate: ``lrs[m] · factor`` for a common schedule
    factor. Every fused weight is member-major along its first dimension."""

    def __init__(
        self,
        population: Population,
        lrs: Sequence[float],
        *,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if len(lrs) != population.size:
            raise KdtuneError(f"population: {len(lrs)} learning rates for {population.size}")
        if not all(math.isfinite(lr) and lr > 0 for lr in lrs):
            raise KdtuneError(f"population: learning rates must be > 0, got {list(lrs)}")
        self.params = [p for p in population.parameters() if p.requires_grad]
        self.size = population.size
        self.lrs = torch.tensor(list(lrs), dtype=torch.float32)
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps
        self.step_count = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, factor: float = 1.0) -> None:
        """One Adam step; ``factor`` scales every member's learning rate (the lr schedule)."""
        self.step_count += 1
        b1, b2 = self.betas
        bc1 = 1 - b1**self.step_count
        bc2_sqrt = math.sqrt(1 - b2**self.step_count)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if p.grad is None:
                continue
            g = p.grad if self.weight_decay == 0 else p.grad.add(p, alpha=self.weight_decay)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / bc2_sqrt).add_(self.eps)
            lr = self.lrs.to(p.device, p.dtype) * (factor / bc1)
            p.sub_(((m / denom).reshape(self.size, -1) * lr.view(-1, 1)).view(p.shape))

    def state_dict(self) -> dict[str, object]:
        return {
            "step": self.step_count,
            "lrs": self.lrs.tolist(),
            "exp_avg": [t.clone() for t in self.exp_avg],
            "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.step_count = int(state["step"])  # type: ignore[call-overload]
        for mine, saved in zip(self.exp_avg, state["exp_avg"], strict=True):  # type: ignore[call-overload]
            mine.copy_(saved)
        for mine, saved in zip(self.exp_avg_sq, state["exp_avg_sq"], strict=True):  # type: ignore[call-overload]
            mine.copy_(saved)

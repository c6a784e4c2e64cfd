"""The masked knowledge-distillation loss: ``L = α·L2(student, GT) + (1 − α)·L2(student, teacher)``.

Each L2 is a sum of squares / 2 / batch over the heatmaps plus the PAFs, summed over every output
stage of the student, with the loss mask applied (1 = count, 0 = ignore). The distillation term
compares each student stage with the teacher's final maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Stage = tuple[torch.Tensor, torch.Tensor]


def masked_l2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``sum(mask · (pred − target)²) / 2 / batch``, computed in float32."""
    diff = pred.float() - target.float()
    sq = diff * diff
    if mask is not None:
        sq = sq * mask.float()
    return sq.sum() / 2 / pred.shape[0]


def _stages_l2(
    student: Sequence[Stage],
    heat: torch.Tensor,
    paf: torch.Tensor,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """Heatmap plus PAF L2 against one target pair, summed over the student's stages."""
    terms = [masked_l2(h, heat, mask) + masked_l2(p, paf, mask) for h, p in student]
    return torch.stack(terms).sum()


def kd_loss(
    student: Sequence[Stage],
    gt_heat: torch.Tensor,
    gt_paf: torch.Tensor,
    mask: torch.Tensor | None,
    alpha: float,
    teacher_heat: torch.Tensor | None = None,
    teacher_paf: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The loss terms of one batch: ``{'student', 'distill', 'total'}`` (scalar tensors).

    ``student`` holds one ``(heatmaps [B,19,G,G], pafs [B,38,G,G])`` pair per stage; ``mask``
    is ``[B,1,G,G]`` with 1 = count, 0 = ignore (``None``: count everything). At ``alpha == 1``
    the teacher is never touched (its maps may be ``None``) and ``distill`` is 0; at
    ``alpha == 0`` the ground truth is still measured (``student``) but carries no gradient.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if not student:
        raise ValueError("student: no output stages")
    if alpha == 0.0:
        with torch.no_grad():
            gt_term = _stages_l2(student, gt_heat, gt_paf, mask)
    else:
        gt_term = _stages_l2(student, gt_heat, gt_paf, mask)
    if alpha == 1.0:
        return {"student": gt_term, "distill": torch.zeros_like(gt_term), "total": gt_term}
    if teacher_heat is None or teacher_paf is None:
        raise ValueError(f"alpha = {alpha!r} < 1 needs the teacher's heatmaps and PAFs")
    distill = _stages_l2(student, teacher_heat.detach(), teacher_paf.detach(), mask)
    total = distill if alpha == 0.0 else alpha * gt_term + (1.0 - alpha) * distill
    return {"student": gt_term, "distill": distill, "total": total}

"""Feature-matching losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hint_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """FitNets hint loss (Romero et al., arXiv 1412.6550): squared L2 distance between the
    (projected) student feature and the teacher feature, averaged over all elements.

    FitNets writes 1/2 ||u_h - r(v_g)||^2; averaging over elements instead of summing makes the
    weight independent of the feature size. Shapes must match (project first).
    """
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(f"hint_loss: student feature {tuple(student_feat.shape)} != teacher {tuple(teacher_feat.shape)}; project first")
    return F.mse_loss(student_feat.float(), teacher_feat.float())

"""Knowledge terms between a graph teacher and a node-wise student (FF-G2M, arXiv 2305.10758).

Both take per-node logits of *all* nodes (teacher z^T, student z^S) and the edge list (2, E) with
both directions of every undirected edge.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def neighbour_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, edge_index: torch.Tensor,
                 self_loops: bool = True) -> torch.Tensor:
    """Low-frequency term: mean over edges (i, j) (and i = j) of KL(p_T(j) || p_S(i)).

    Node i's student matches the teacher at its neighbour j: the smooth, shared part of the
    neighbourhood (with self loops only it is plain logit KD, as in GLNN)."""
    n = len(student_logits)
    e = edge_index
    if self_loops:
        e = torch.cat([e, torch.arange(n, device=e.device).repeat(2, 1)], 1)
    log_q = F.log_softmax(student_logits.float(), -1)[e[0]]
    log_p = F.log_softmax(teacher_logits.float(), -1)[e[1]]
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def high_frequency_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, edge_index: torch.Tensor,
                      tau: float = 1.0) -> torch.Tensor:
    """High-frequency term: mean over edges i ≠ j of KL(softmax(|z^T_i − z^T_j| / τ) || softmax(|z^S_i − z^S_j| / τ)).

    What differs between neighbours, per class; zero when neither network tells neighbours apart."""
    e = edge_index[:, edge_index[0] != edge_index[1]]
    if e.shape[1] == 0:
        return student_logits.sum() * 0
    dt = (teacher_logits.float()[e[0]] - teacher_logits.float()[e[1]]).abs() / tau
    ds = (student_logits.float()[e[0]] - student_logits.float()[e[1]]).abs() / tau
    log_p, log_q = F.log_softmax(dt, -1), F.log_softmax(ds, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()

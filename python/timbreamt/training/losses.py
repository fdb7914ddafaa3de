"""Training losses: focal loss on the note maps, supervised InfoNCE on timbre embeddings."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ..core import constants as C


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float = C.FOCAL_GAMMA) -> torch.Tensor:
    """Mean binary focal loss. ``alpha`` weights negatives, 1 - alpha positives (targets are sparse)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    weight = (1 - alpha) * target + alpha * (1 - target)
    return (weight * (1 - p_t) ** gamma * ce).mean()


def note_loss(out: dict[str, torch.Tensor], frame: torch.Tensor, onset: torch.Tensor) -> torch.Tensor:
    """Focal loss on both maps; logits and targets (B, 84, T)."""
    return (focal_loss(out["frame"], frame, C.FOCAL_ALPHA_FRAME)
            + focal_loss(out["onset"], onset, C.FOCAL_ALPHA_ONSET))


def distillation_loss(out: dict[str, torch.Tensor], teacher_probs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Binary cross-entropy of the student's onset and frame logits against a teacher's probabilities
    (B, 84, T each), minus the teacher's own entropy: a KL divergence per cell, >= 0 and 0 only where the
    student's probabilities equal the teacher's (the gradient is sigmoid(student) - teacher).
    Unweighted (a plain KL divergence), unlike the focal label loss it is added to."""
    total = out["frame"].new_zeros(())
    for key in ("frame", "onset"):
        target = teacher_probs[key].detach()
        ce = F.binary_cross_entropy_with_logits(out[key], target)
        p = target.clamp(1e-7, 1 - 1e-7)
        entropy = -(p * torch.log(p) + (1 - p) * torch.log1p(-p)).mean()
        total = total + ce - entropy
    return total


def info_nce(embedding: torch.Tensor, part: torch.Tensor, max_cells: int = 512,
             temperature: float = C.INFONCE_TEMPERATURE, generator: torch.Generator | None = None) -> torch.Tensor:
    """Supervised InfoNCE over active time-pitch cells, per example.

    embedding (B, D, 84, T) L2-normalised; part (B, 84, T) int: instrument index of each cell, < 0 for
    silent or shared cells (ignored). Positives are the other cells of the same instrument. Examples with
    fewer than two instruments give no term. Returns the mean over anchors (0 if there are none).
    """
    losses = []
    for b in range(embedding.shape[0]):
        labels = part[b].reshape(-1)
        idx = torch.nonzero(labels >= 0).squeeze(1)
        if idx.numel() < 4 or torch.unique(labels[idx]).numel() < 2:
            continue
        if idx.numel() > max_cells:
            idx = idx[torch.randperm(idx.numel(), generator=generator)[:max_cells]]
        e = embedding[b].reshape(embedding.shape[1], -1)[:, idx].T          # (M, D)
        y = labels[idx]
        sim = e @ e.T / temperature
        eye = torch.eye(len(y), dtype=torch.bool)
        sim = sim.masked_fill(eye, float("-inf"))
        log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
        pos = (y[:, None] == y[None, :]) & ~eye
        has_pos = pos.any(dim=1)
        mean_log_pos = (log_prob.masked_fill(~pos, 0).sum(1) / pos.sum(1).clamp(min=1))[has_pos]
        losses.append(-mean_log_pos.mean())
    if not losses:
        return embedding.sum() * 0.0
    return torch.stack(losses).mean()

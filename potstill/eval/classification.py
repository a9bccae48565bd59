"""Classifier metrics: accuracy, cross-entropy, parameter count, CPU latency."""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F


@torch.no_grad()
def evaluate_classifier(model: nn.Module, data, batch_size: int = 512) -> dict[str, float]:
    """Accuracy and mean cross-entropy on labelled rows (label -1 rows are skipped)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct, total, nll = 0, 0, 0.0
    for i in range(0, len(data), batch_size):
        x, y = data.x[i:i + batch_size].to(device), data.y[i:i + batch_size].to(device)
        keep = y >= 0
        if not keep.any():
            continue
        logits = model(x[keep]).float()
        correct += int((logits.argmax(-1) == y[keep]).sum())
        nll += float(F.cross_entropy(logits, y[keep], reduction="sum"))
        total += int(keep.sum())
    model.train(was_training)
    if total == 0:
        raise ValueError("no labelled rows to evaluate on")
    return {"acc": correct / total, "nll": nll / total}


@torch.no_grad()
def latency_ms(model: nn.Module, in_shape: tuple[int, ...], batch_size: int = 1, repeats: int = 50) -> float:
    """Median wall-clock milliseconds of one forward pass (after warm-up), on the model's device.

    On CPU it runs with one torch thread, so numbers compare across machines and runs.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _latency(model, in_shape, batch_size, repeats)
    finally:
        torch.set_num_threads(threads)


def _latency(model, in_shape, batch_size, repeats):
    model.eval()
    device = next(model.parameters()).device
    x = torch.randn(batch_size, *in_shape, device=device)
    for _ in range(5):
        model(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    return 1000 * times[len(times) // 2]

"""``torchrun`` awareness. With one process every function here is a no-op.

Gradients are averaged with an explicit all-reduce per parameter group after each backward
(rather than wrapping the method in DDP), because methods have several groups with their own
losses and update frequencies; DDP's single-forward bucketing assumes one loss per step.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init(device: str = "auto") -> torch.device:
    """Join the process group when launched by torchrun; return this process's device."""
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    if want_cuda:
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu" if device == "auto" else device)


def all_reduce_grads(params) -> None:
    n = world_size()
    if n == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(n)


def gather_rng_states() -> list[dict[str, torch.Tensor]]:
    """Every process's RNG states (a collective call under torchrun)."""
    own = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        own["cuda"] = torch.cuda.get_rng_state()
    if world_size() == 1:
        return [own]
    out: list = [None] * world_size()
    dist.all_gather_object(out, own)
    return out


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: torch.nn.Module) -> None:
    if world_size() == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, 0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def rank0_says(flag: bool) -> bool:
    """Rank 0's ``flag`` on every process (so all processes take the same branch)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([float(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, 0)
    return bool(t.item())

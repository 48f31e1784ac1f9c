"""FSDP: the model's weights, gradients and optimizer state sharded across workers.

Uses PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``) on a one-dimensional device
mesh: each transformer block is one unit (gathered for its forward and backward, then
freed), and the root holds what is left (embeddings, final norm, score head). It runs
on GPUs with NCCL and on CPUs with gloo, so the same code is tested on a laptop. Ray
Train has set up the process group; its own ``prepare_model`` FSDP path needs GPUs, so
it is not used here.

With FSDP every forward pass is a collective (each block all-gathers its weights), so
every worker must run the same number of them: training already does (equal steps);
evaluation pads a worker's share with throwaway batches (see ``loop.evaluate``).
State dicts are gathered whole (``full_state_dict``) for checkpoints and export; every
worker takes part in the gathering, and rank 0 writes.
"""

from __future__ import annotations

from typing import Any

import torch


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a transformer: the ``ModuleList`` holding most parameters
    (``model.layers`` in Llama-like decoders, ``encoder.layer`` in BERT-like encoders)."""
    best, size = None, 0
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            n = sum(p.numel() for p in module.parameters())
            if n > size:
                best, size = module, n
    if best is None:
        raise ValueError(f"{type(model).__name__} has no list of transformer blocks to shard")
    return list(best)


def shard(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Shard ``model`` in place across the process group's workers; returns it."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        raise RuntimeError("FSDP needs a process group (Ray Train sets one up for each worker)")
    model.to(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _full() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def gathered_weights(model: torch.nn.Module, *, trainable_only: bool) -> dict[str, torch.Tensor]:
    """The whole state dict on the CPU (a collective: every worker calls it)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_full())
    if not trainable_only:
        return state
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in state.items() if k in names}


def gathered_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full())


def load_gathered(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, weights: dict, optim_state: dict
) -> None:
    """Put a gathered checkpoint back into a sharded model and its optimizer (every worker)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, strict=False)
    result = set_model_state_dict(model, weights, options=options)
    if result.unexpected_keys:
        raise RuntimeError(f"checkpoint does not fit this model: {result.unexpected_keys[:3]}")
    set_optimizer_state_dict(model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True))

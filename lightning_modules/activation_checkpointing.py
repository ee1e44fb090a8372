"""Activation checkpointing of the repeated blocks of a model, keeping its parameter names."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class CheckpointedForward:
    """Stands in for ``module.forward``: with gradients on, runs the block under non-reentrant
    ``torch.utils.checkpoint`` (activations recomputed in the backward pass); without, as is."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, *args, **kwargs):
        forward = type(self.module).forward.__get__(self.module)
        if torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Checkpoint every block of every ``nn.ModuleList`` (SAM and CLIP blocks, the LM
    encoder's and the decoder's layers); returns how many blocks were wrapped.

    The forward is replaced on the instance, so state-dict keys, freeze prefixes and
    checkpoints stay the same as without checkpointing.
    """
    wrapped = 0
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            for block in module:
                if not isinstance(block.__dict__.get("forward"), CheckpointedForward):
                    block.forward = CheckpointedForward(block)
                    wrapped += 1
    return wrapped

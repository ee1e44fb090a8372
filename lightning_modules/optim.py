"""AdamW parameter groups and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

# Parameters that are tables of positions or learned tokens rather than weight matrices: SAM's
# absolute and decomposed relative positions, CLIP's class token and positions, the image
# layout vectors of OCRModel. Decaying them pulls them to zero, which has no meaning for them.
NO_DECAY_NAMES = frozenset(
    {
        "pos_embed",
        "rel_pos_h",
        "rel_pos_w",
        "class_embedding",
        "position_embedding",
        "view_separator",
        "image_newline",
    }
)
# Modules whose every parameter is a learned token (the causal-flow encoder's query sets).
NO_DECAY_MODULES = frozenset({"queries"})


def no_decay(module_name: str, module: nn.Module, param_name: str, param: nn.Parameter) -> bool:
    """Whether a parameter (``param_name`` directly on ``module`` at ``module_name``) is left
    out of weight decay: norm weights and biases (every parameter under 2-D), embedding tables,
    position tables and learnable queries / separators."""
    return (
        param.ndim < 2
        or isinstance(module, nn.Embedding)
        or param_name in NO_DECAY_NAMES
        or module_name.rsplit(".", 1)[-1] in NO_DECAY_MODULES
    )


def parameter_groups(
    model: nn.Module, weight_decay: float, encoder_lr_scale: float = 1.0
) -> list[dict]:
    """Trainable parameters split into decayed and non-decayed AdamW groups, and with
    ``encoder_lr_scale != 1`` the encoder's parameters into groups of their own.

    Each group carries ``lr_scale`` (the multiple of the run's learning rate it trains at) and
    the parameter names (``names``) so that tests and logs can say which tensor went where; a
    tied parameter counts once, under its first owner. Empty groups are left out.
    """
    if encoder_lr_scale <= 0:
        raise ValueError(f"encoder_lr_scale must be > 0, got {encoder_lr_scale}")
    groups: dict[tuple[bool, bool], dict] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        in_encoder = encoder_lr_scale != 1.0 and module_name.split(".")[0] == "encoder"
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            plain = no_decay(module_name, module, param_name, param)
            group = groups.setdefault(
                (in_encoder, plain),
                {
                    "params": [],
                    "names": [],
                    "weight_decay": 0.0 if plain else weight_decay,
                    "lr_scale": encoder_lr_scale if in_encoder else 1.0,
                },
            )
            group["params"].append(param)
            group["names"].append(f"{module_name}.{param_name}" if module_name else param_name)
    return [groups[key] for key in sorted(groups)]


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak rate, then cosine decay to ``min_lr_ratio`` x peak at
    ``total_steps`` (held there after)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

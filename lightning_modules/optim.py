"""AdamW parameter groups and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial

import torch
from torch import nn

from zoo.model.component import Component, join


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters of ``model`` left out of weight decay: every parameter under
    2-D (norm weights, biases) and embedding tables, as in timm, and the ones its components
    declare (``no_weight_decay``: position tables, learned tokens, layout vectors), since
    decaying them pulls them to zero, which has no meaning for them."""
    declared = model.no_weight_decay() if isinstance(model, Component) else set()
    return declared | {
        join(module_name, param_name)
        for module_name, module in model.named_modules()
        for param_name, param in module.named_parameters(recurse=False)
        if param.ndim < 2 or isinstance(module, nn.Embedding)
    }


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    encoder_lr_scale: float = 1.0,
    start_steps: Mapping[str, int] | None = None,
) -> list[dict]:
    """Trainable parameters split into decayed and non-decayed AdamW groups, with
    ``encoder_lr_scale != 1`` the encoder's parameters in groups of their own, and the
    parameters under each module path of ``start_steps`` in groups that start training at that
    optimizer step (the latest step wins where paths nest).

    Each group carries ``lr_scale`` (the multiple of the run's learning rate it trains at),
    ``start_step`` (0: from the start) and the parameter names (``names``) so that tests and
    logs can say which tensor went where; a tied parameter counts once, under its first owner.
    Empty groups are left out.
    """
    if encoder_lr_scale <= 0:
        raise ValueError(f"encoder_lr_scale must be > 0, got {encoder_lr_scale}")
    start_steps = dict(start_steps or {})
    negative = {path: step for path, step in start_steps.items() if step < 0}
    if negative:
        raise ValueError(f"frozen_until: the steps must be >= 0, got {negative}")
    groups: dict[tuple[bool, int, bool], dict] = {}
    seen: set[int] = set()
    undecayed = no_decay_names(model)
    for module_name, module in model.named_modules():
        in_encoder = encoder_lr_scale != 1.0 and module_name.split(".")[0] == "encoder"
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            name = join(module_name, param_name)
            plain = name in undecayed
            start = max(
                (step for path, step in start_steps.items() if is_under(name, path)), default=0
            )
            group = groups.setdefault(
                (in_encoder, start, plain),
                {
                    "params": [],
                    "names": [],
                    "weight_decay": 0.0 if plain else weight_decay,
                    "lr_scale": encoder_lr_scale if in_encoder else 1.0,
                    "start_step": start,
                },
            )
            group["params"].append(param)
            group["names"].append(name)
    return [groups[key] for key in sorted(groups)]


def is_under(name: str, path: str) -> bool:
    """Whether the parameter or module ``name`` is ``path`` or lies under it."""
    return name == path or name.startswith(path + ".")


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak rate, then cosine decay to ``min_lr_ratio`` x peak at
    ``total_steps`` (held there after). A group with a ``start_step`` trains at 0 before it
    and warms up again over ``warmup_steps`` from it (its AdamW moments start empty there)."""

    def cosine(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def delayed(start: int, step: int) -> float:
        if step < start:
            return 0.0
        return cosine(step) * min(1.0, (step - start + 1) / max(1, warmup_steps))

    factors = [
        partial(delayed, group["start_step"]) if group.get("start_step", 0) else cosine
        for group in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)

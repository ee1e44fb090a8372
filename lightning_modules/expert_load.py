"""How evenly the MoE routers spread tokens over their experts, gathered with forward hooks.

The decoder code stays untouched: a pre-hook on each :class:`~decoders.moe.MoEFeedForward`
remembers which tokens are real (not padding) and a hook on its router counts, per routed
expert, the (token, expert) choices of those tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import nn

from decoders.moe import MoEFeedForward, Routing


class ExpertLoadMonitor:
    """Per MoE layer, the number of choices each routed expert received since :meth:`reset`.

    ``counts`` maps the layer name (e.g. ``decoder.layers.1``) to an ``[E]`` tensor.
    """

    def __init__(self, model: nn.Module) -> None:
        self.counts: dict[str, torch.Tensor] = {}
        self._token_masks: dict[str, torch.Tensor | None] = {}
        self._handles = []
        for name, module in model.named_modules():
            if isinstance(module, MoEFeedForward):
                layer = name.removesuffix(".mlp")
                self._handles.append(
                    module.register_forward_pre_hook(
                        partial(self._remember_mask, layer), with_kwargs=True
                    )
                )
                self._handles.append(
                    module.router.register_forward_hook(partial(self._count, layer))
                )

    def __bool__(self) -> bool:
        return bool(self._handles)

    def _remember_mask(
        self, layer: str, module: nn.Module, args: tuple, kwargs: Mapping[str, Any]
    ) -> None:
        mask = args[1] if len(args) > 1 else kwargs.get("token_mask")
        self._token_masks[layer] = None if mask is None else mask.detach()

    @torch.no_grad()
    def _count(self, layer: str, router: nn.Module, args: tuple, routing: Routing) -> None:
        expert_ids = routing.expert_ids
        mask = self._token_masks.get(layer)
        if mask is not None and mask.numel() == expert_ids.shape[0]:
            expert_ids = expert_ids[mask.reshape(-1).bool()]
        counts = torch.bincount(expert_ids.reshape(-1), minlength=routing.scores.shape[-1])
        previous = self.counts.get(layer)
        self.counts[layer] = counts if previous is None else previous + counts

    def reset(self) -> None:
        self.counts.clear()
        self._token_masks.clear()

    def summary(self) -> dict[str, float]:
        """Per layer: ``max_over_mean`` (load of the busiest expert / mean load; 1 is perfectly
        balanced, E means one expert takes everything) and ``entropy`` of the load fractions
        divided by log E (1 is balanced, 0 is one expert)."""
        result = {}
        for layer, counts in self.counts.items():
            total = counts.sum()
            if total == 0:
                continue
            fractions = counts.double() / total
            num_experts = counts.numel()
            entropy = -(fractions * fractions.clamp_min(1e-12).log()).sum() / math.log(num_experts)
            result[f"{layer}/max_over_mean"] = float(fractions.max() * num_experts)
            result[f"{layer}/entropy"] = float(entropy)
        return result

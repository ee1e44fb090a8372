"""Total and per-token active parameter counts of a decoder (the "3B-A570M" of DeepSeek-3B-MoE)."""

from __future__ import annotations

from torch import nn

from decoders.moe import MoEFeedForward


def count_parameters(decoder: nn.Module) -> tuple[int, int]:
    """``(total, active)``: every parameter once, and those one token's forward multiplies with.

    Active leaves out the routed experts a token does not pick (``1 - k / E`` of each MoE
    layer's experts) and the input embedding table, which is a lookup, unless it is tied to the
    LM head. Works on the meta device.
    """
    total = sum(p.numel() for p in decoder.parameters())
    inactive = 0
    for module in decoder.modules():
        if isinstance(module, MoEFeedForward):
            experts = sum(p.numel() for p in module.experts.parameters())
            unused = module.experts.num_experts - module.router.top_k
            inactive += experts * unused // module.experts.num_experts
    embedding = getattr(decoder, "embed_tokens", None)
    head = getattr(decoder, "lm_head", None)
    if isinstance(embedding, nn.Embedding) and (
        head is None or head.weight is not embedding.weight
    ):
        inactive += embedding.weight.numel()
    return total, total - inactive

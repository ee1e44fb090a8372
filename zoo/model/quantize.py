"""Quantising a model for inference: ``quantize="int8"`` swaps the decoder's weight-heavy layers
for weight-only int8 ones (:mod:`zoo.layers.int8`).

Which layers: those a decode step reads for every token, named by the decoder's own adapter
roles (``decoder_attention``, ``decoder_mlp``, ``shared_experts``, ``routed_experts``) and its
``lm_head`` role, so a new decoder brings its own. The router, the norms, the token embedding
(a decode step reads one row of it) and the vision encoder stay in their precision. The swap
works on a real model (its weights are quantized) and on one built on the meta device
(empty int8 buffers, which ``zoo.from_pretrained`` fills from the stored weights).
"""

from __future__ import annotations

import torch
from torch import nn

from decoders.moe import Int8RoutedExperts, RoutedExperts
from zoo.layers.int8 import Int8Linear
from zoo.model.ocr_model import OCRModel

QUANTIZE_MODES = ("int8",)
QUANTIZED_ROLES = ("decoder_attention", "decoder_mlp", "shared_experts", "routed_experts")
# The int8 kernel takes bfloat16 rows (float32 rows run 10x slower through it).
QUANTIZED_ACTIVATION_DTYPE = torch.bfloat16


def check_quantize(quantize: str | None, dtype: torch.dtype | None = None) -> None:
    """Refuse an unknown ``quantize`` mode, or a ``dtype`` it cannot run with."""
    if quantize is None:
        return
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"quantize={quantize!r} is not supported; valid: None (no quantisation) or "
            f"{', '.join(repr(mode) for mode in QUANTIZE_MODES)}"
        )
    if dtype not in (None, QUANTIZED_ACTIVATION_DTYPE):
        raise ValueError(
            f"quantize={quantize!r} runs with {QUANTIZED_ACTIVATION_DTYPE} activations (torch's "
            f"int8 weight kernel takes bfloat16 rows); got dtype={dtype}, leave it unset"
        )


def quantized_layers(decoder: nn.Module) -> list[str]:
    """Paths (relative to ``decoder``) of the linear layers and routed-expert modules that
    int8 quantisation replaces."""
    targets = decoder.adapter_targets()
    paths = [path for role in QUANTIZED_ROLES[:-1] for path in targets.get(role, [])]
    paths += sorted({path.rpartition(".")[0] for path in targets.get("routed_experts", [])})
    roles = decoder.roles()
    head, embedding = roles.get("lm_head"), roles.get("token_embedding")
    tied = (
        head
        and embedding
        and decoder.get_submodule(head).weight is decoder.get_submodule(embedding).weight
    )
    if head is not None and not tied:  # a head tied to the embedding stays as it is
        paths.append(head)
    return paths


def quantize_model(model: OCRModel, quantize: str) -> OCRModel:
    """Swap the decoder's weight-heavy layers (see the module doc) for their int8 forms, in
    place; returns ``model``."""
    check_quantize(quantize)
    decoder = model.decoder
    paths = quantized_layers(decoder)
    if not paths:
        raise ValueError(
            f"quantize={quantize!r}: the decoder {type(decoder).__name__} declares none of the "
            f"roles {', '.join(QUANTIZED_ROLES)} or lm_head; nothing to quantize"
        )
    for path in paths:
        layer = decoder.get_submodule(path)
        if isinstance(layer, RoutedExperts):
            decoder.set_submodule(path, Int8RoutedExperts.from_float(layer))
        elif isinstance(layer, nn.Linear):
            decoder.set_submodule(path, Int8Linear.from_linear(layer))
    return model

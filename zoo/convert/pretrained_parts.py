"""Public transformers checkpoints of the encoders' parts -> zoo parameter names.

DeepSeek-OCR 2's encoder pretraining starts from public weights: SAM ViT-B for the tokenizer,
Qwen2-0.5B for the LM encoder (DeepSeek-OCR's CLIP stage starts from CLIP-L). Each function
takes the state dict of a transformers folder (``SamModel`` / ``SamVisionModel``,
``CLIPVisionModel`` / ``CLIPModel``, ``Qwen2Model`` / ``Qwen2ForCausalLM``) and returns the
tensors under the names of the zoo part they initialise, relative to that part:
``encoder.tokenizer`` (:class:`encoders.sam.SamViTB`), ``encoder.clip``
(:class:`encoders.clip.ClipOverFeatureMap`) and ``encoder.lm``
(:class:`encoders.causal_flow.MaskedTransformer`). Tensors the zoo part has no use for (SAM's
prompt encoder and mask decoder, CLIP's pixel patchify, post-norm and text tower, Qwen2's token
embedding and LM head) are left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from zoo.convert.deepseek_ocr2_vision import SAM_FROM_TRANSFORMERS
from zoo.convert.deepseek_ocr_vision import CLIP_FROM_OFFICIAL
from zoo.convert.rules import rename_state_dict

# The compressor convs follow SAM's neck in the zoo tokenizer; no SAM checkpoint has them.
SAM_PARTS_NOT_IN_SAM = ("net_2.", "net_3.")

_CLIP_QKV = re.compile(r"(encoder\.layers\.\d+\.self_attn)\.([qkv])_proj\.(weight|bias)")
_CLIP_UNUSED = ("embeddings.patch_embedding.", "embeddings.position_ids", "post_layernorm.")
_QWEN2_UNUSED = ("embed_tokens.", "lm_head.", "rotary_emb.")


def _under(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose names start with ``prefix``, with it removed."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _renamed(tensors: Mapping[str, torch.Tensor], rules, source: str) -> dict[str, torch.Tensor]:
    renamed, unmatched = rename_state_dict(tensors, rules)
    if unmatched:
        raise ValueError(f"{source}: no zoo name for tensors {sorted(unmatched)[:8]}")
    return renamed


def sam_from_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``SamModel`` / ``SamVisionModel`` tensors -> :class:`SamViTB` names (no compressor)."""
    vision = _under(state_dict, "vision_encoder.")
    if not vision:
        raise ValueError(
            "SAM checkpoint: no 'vision_encoder.*' tensors; expected a transformers SamModel or "
            "SamVisionModel state dict"
        )
    return _renamed(vision, SAM_FROM_TRANSFORMERS, "SAM checkpoint")


def clip_from_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``CLIPVisionModel`` / ``CLIPModel`` tensors (names under ``vision_model.`` as saved on
    the hub, or without it as transformers 5 holds them) -> :class:`ClipOverFeatureMap` names.

    The separate q, k, v projections are stacked into the fused ``qkv`` projection, in that
    order; the names are then those of the official DeepSeek-OCR CLIP stage.
    """
    vision = _under(state_dict, "vision_model.") or dict(state_dict)
    if "embeddings.class_embedding" not in vision:
        raise ValueError(
            "CLIP checkpoint: no '[vision_model.]embeddings.class_embedding'; expected a "
            "transformers CLIPVisionModel or CLIPModel state dict"
        )
    fused: dict[str, torch.Tensor] = {}
    projections: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in vision.items():
        if key.startswith(_CLIP_UNUSED):
            continue
        match = _CLIP_QKV.fullmatch(key)
        if match:
            attention, which, kind = match.groups()
            projections.setdefault((attention, kind), {})[which] = tensor
        else:
            fused[key.replace("encoder.layers.", "transformer.layers.", 1)] = tensor
    for (attention, kind), parts in projections.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"CLIP checkpoint: {attention} has only {sorted(parts)} {kind}s")
        name = attention.replace("encoder.layers.", "transformer.layers.", 1)
        fused[f"{name}.qkv_proj.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return _renamed(fused, CLIP_FROM_OFFICIAL, "CLIP checkpoint")


def qwen2_from_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``Qwen2Model`` / ``Qwen2ForCausalLM`` tensors -> :class:`MaskedTransformer` names.

    The zoo's LM encoder keeps Qwen2's layer names; it reads embeddings of image tokens and
    queries, so the token embedding (and the LM head) are dropped.
    """
    body = _under(state_dict, "model.") or dict(state_dict)
    tensors = {k: v for k, v in body.items() if not k.startswith(_QWEN2_UNUSED)}
    if not any(k.startswith("layers.") for k in tensors):
        raise ValueError(
            "Qwen2 checkpoint: no 'layers.*' tensors; expected a transformers Qwen2Model or "
            "Qwen2ForCausalLM state dict"
        )
    return tensors

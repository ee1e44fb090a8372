"""Public transformers and timm checkpoints of the encoders' parts -> zoo parameter names.

DeepSeek-OCR 2's encoder pretraining starts from public weights: SAM ViT-B for the tokenizer,
Qwen2-0.5B for the LM encoder (DeepSeek-OCR's CLIP stage starts from CLIP-L). Each function
takes the state dict of a transformers folder (``SamModel`` / ``SamVisionModel``,
``CLIPVisionModel`` / ``CLIPModel``, ``Qwen2Model`` / ``Qwen2ForCausalLM``) or of a timm model
(``samvit_base_patch16``, ``vit_large_patch14_clip_224``; ``*_from_checkpoint`` tells the two
apart by their tensor names) and returns the tensors under the names of the zoo part they
initialise, relative to that part:
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

from zoo.io.convert.deepseek_ocr2_vision import SAM_FROM_TRANSFORMERS
from zoo.io.convert.deepseek_ocr_vision import CLIP_FROM_OFFICIAL
from zoo.io.convert.rules import RenameRule, rename_state_dict, template_rules

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


# timm's VisionTransformerSAM keeps SAM's layout except for the MLP's names; other names pass
# through and the strict load reports any the zoo part lacks.
_SAM_FROM_TIMM = [
    RenameRule(r"blocks\.(\d+)\.mlp\.fc([12])\.(weight|bias)", r"blocks.\1.mlp.lin\2.\3"),
    RenameRule(r"(.+)", r"\1"),
]
_TIMM_SAM_UNUSED = ("head.", "norm_pre.", "fc_norm.")
# timm's CLIP ViT (pre-norm, fused qkv) -> the official DeepSeek-OCR CLIP names, relative to
# ``ClipOverFeatureMap``.
_CLIP_FROM_TIMM = template_rules(
    (
        ("norm_pre.", "pre_norm."),
        ("blocks.{i}.norm1.", "blocks.{i}.attn_norm."),
        ("blocks.{i}.attn.qkv.", "blocks.{i}.attn.qkv."),
        ("blocks.{i}.attn.proj.", "blocks.{i}.attn.out."),
        ("blocks.{i}.norm2.", "blocks.{i}.mlp_norm."),
        ("blocks.{i}.mlp.", "blocks.{i}.mlp."),
    )
)
_TIMM_CLIP_UNUSED = ("patch_embed.", "norm.", "fc_norm.", "head.")


def sam_from_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``samvit_*`` tensors -> :class:`SamViTB` names (no compressor)."""
    if "pos_embed" not in state_dict or "blocks.0.norm1.weight" not in state_dict:
        raise ValueError("SAM checkpoint: no 'pos_embed' / 'blocks.0.norm1.weight' (timm names)")
    kept = {k: v for k, v in state_dict.items() if not k.startswith(_TIMM_SAM_UNUSED)}
    return rename_state_dict(kept, _SAM_FROM_TIMM)[0]


def clip_from_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``vit_*_clip_*`` tensors -> :class:`ClipOverFeatureMap` names: the class token and
    position table lose their batch axes; the pixel patchify, final norm and head are unused."""
    if "cls_token" not in state_dict or "pos_embed" not in state_dict:
        raise ValueError("CLIP checkpoint: no 'cls_token' / 'pos_embed' (timm names)")
    blocks = {
        k: v
        for k, v in state_dict.items()
        if not k.startswith(_TIMM_CLIP_UNUSED) and k not in ("cls_token", "pos_embed")
    }
    return {
        "class_embedding": state_dict["cls_token"].reshape(-1),
        "position_embedding": state_dict["pos_embed"].reshape(
            -1, state_dict["pos_embed"].shape[-1]
        ),
        **_renamed(blocks, _CLIP_FROM_TIMM, "timm CLIP checkpoint"),
    }


def sam_from_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A SAM checkpoint in transformers' or timm's names -> :class:`SamViTB` names."""
    if any(k.startswith("vision_encoder.") for k in state_dict):
        return sam_from_transformers(state_dict)
    return sam_from_timm(state_dict)


def clip_from_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CLIP checkpoint in transformers' or timm's names -> :class:`ClipOverFeatureMap` names."""
    if "cls_token" in state_dict:
        return clip_from_timm(state_dict)
    return clip_from_transformers(state_dict)

"""transformers' own DeepSeek-OCR 2 (``DeepseekOcr2ForConditionalGeneration``) <-> zoo models.

A folder saved by transformers holds ``config.json`` (``model_type: deepseek_ocr2``, with
``text_config``, ``vision_config.sam_config``/``encoder_config`` and ``image_token_id``) and
safetensors in the released tensor names (transformers converts its stacked experts back on
save), so its tensors load through :mod:`zoo.io.convert.official_checkpoint`. This module maps the
config both ways and gives the in-memory (runtime) names of a loaded transformers model, used to
hand it a zoo model's weights for side-by-side checks.

transformers fixes the query sets at 144 (768 px views) and 256 (1024 px) and builds neither
MLA nor a normalised top-k router, so only models within those bounds have a transformers twin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from decoders.deepseek_moe import DeepseekMoEDecoder
from encoders.causal_flow import DEFAULT_QUERY_SETS, CausalFlowEncoder
from zoo.io.convert.deepseek_decoder import zoo_to_transformers
from zoo.io.convert.deepseek_ocr2_vision import TRANSFORMERS_FROM_CAUSAL_FLOW
from zoo.io.convert.official_checkpoint import (
    RELEASE_IMAGE_TOKEN_ID,
    ReleasedLayoutError,
    check_release_options,
    json_ready,
    resolved_kwargs,
    sam_kwargs,
)
from zoo.io.convert.rules import rename_state_dict

if TYPE_CHECKING:
    from transformers import DeepseekOcr2Config

MODEL_TYPE = "deepseek_ocr2"

# (transformers SAM config key, zoo sam_vitb argument)
SAM_KEYS = (
    ("hidden_size", "width"),
    ("num_hidden_layers", "depth"),
    ("num_attention_heads", "num_heads"),
    ("global_attn_indexes", "global_attn_indexes"),
    ("output_channels", "neck_dim"),
    ("downsample_channels", "downsample_channels"),
    ("window_size", "window_size"),
    ("image_size", "img_size"),
    ("patch_size", "patch_size"),
    ("mlp_ratio", "mlp_ratio"),
)
# (transformers vision-encoder config key, zoo causal_flow argument)
ENCODER_KEYS = (
    ("hidden_size", "hidden_size"),
    ("intermediate_size", "intermediate_size"),
    ("num_hidden_layers", "num_layers"),
    ("num_attention_heads", "num_heads"),
    ("num_key_value_heads", "num_kv_heads"),
    ("rms_norm_eps", "rms_norm_eps"),
)
# (transformers text config key, zoo deepseek_moe argument)
TEXT_KEYS = (
    ("vocab_size", "vocab_size"),
    ("hidden_size", "hidden_size"),
    ("num_hidden_layers", "num_hidden_layers"),
    ("num_attention_heads", "num_attention_heads"),
    ("intermediate_size", "intermediate_size"),
    ("n_routed_experts", "n_routed_experts"),
    ("moe_intermediate_size", "moe_intermediate_size"),
    ("num_experts_per_tok", "num_experts_per_tok"),
    ("n_shared_experts", "n_shared_experts"),
    ("routed_scaling_factor", "routed_scaling_factor"),
    ("topk_method", "topk_method"),
    ("n_group", "n_group"),
    ("topk_group", "topk_group"),
    ("rms_norm_eps", "rms_norm_eps"),
)


def _rope_theta(config: Mapping[str, Any]) -> float | None:
    rope = config.get("rope_parameters") or {}
    return rope.get("rope_theta", config.get("rope_theta"))


def build_config_from_transformers(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The ``build_model`` config of a transformers ``DeepseekOcr2`` ``config.json``."""
    if config.get("model_type") != MODEL_TYPE:
        raise ReleasedLayoutError(f"{source}: model_type must be {MODEL_TYPE!r}")
    vision = config.get("vision_config") or {}
    sam_config = vision.get("sam_config") or {}
    encoder_config = vision.get("encoder_config") or {}
    text = config.get("text_config") or {}
    sam = {zoo: sam_config[key] for key, zoo in SAM_KEYS if sam_config.get(key) is not None}
    encoder = {
        "name": "causal_flow",
        "tokenizer": {"name": "sam_vitb", **sam},
        **{zoo: encoder_config[k] for k, zoo in ENCODER_KEYS if encoder_config.get(k) is not None},
        "query_sets": dict(DEFAULT_QUERY_SETS),
    }
    if _rope_theta(encoder_config) is not None:
        encoder["rope_theta"] = _rope_theta(encoder_config)
    decoder = {
        "name": "deepseek_moe",
        **{z: text[k] for k, z in TEXT_KEYS if text.get(k) is not None},
    }
    layer_types = text.get("mlp_layer_types")
    if layer_types:
        dense = layer_types.index("sparse") if "sparse" in layer_types else len(layer_types)
        if any(kind != "sparse" for kind in layer_types[dense:]):
            raise ReleasedLayoutError(
                f"{source}: text_config.mlp_layer_types {layer_types} is not dense layers then "
                "sparse ones, the only pattern deepseek_moe builds"
            )
        decoder["first_k_dense_replace"] = dense
    if _rope_theta(text) is not None:
        decoder["rope_theta"] = _rope_theta(text)
    return {
        "encoder": encoder,
        "projector": {"name": "linear"},
        "decoder": decoder,
        "model": {
            "image_mode": "v2",
            "image_token_id": config.get("image_token_id", RELEASE_IMAGE_TOKEN_ID),
        },
    }


def transformers_config(build: Mapping[str, Any], image_token_id: int) -> DeepseekOcr2Config:
    """transformers' config of the model ``build`` describes (sdpa attention throughout).

    Raises :class:`ReleasedLayoutError` for a model transformers cannot build.
    """
    encoder, decoder = build["encoder"], build["decoder"]
    if encoder["name"] != "causal_flow" or decoder["name"] != "deepseek_moe":
        raise ReleasedLayoutError(
            "transformers' DeepseekOcr2 holds a causal_flow encoder and a deepseek_moe decoder, "
            f"not {encoder['name']!r} and {decoder['name']!r}"
        )
    if (build.get("projector") or {"name": "linear"})["name"] != "linear":
        raise ReleasedLayoutError("transformers' DeepseekOcr2 has a linear projector")
    check_release_options(encoder)
    lm = resolved_kwargs(CausalFlowEncoder, encoder)
    text = resolved_kwargs(DeepseekMoEDecoder, decoder)
    query_sets = {int(k): int(v) for k, v in (lm["query_sets"] or DEFAULT_QUERY_SETS).items()}
    unsupported = {
        "query_sets": query_sets != DEFAULT_QUERY_SETS,
        "attention": text["attention"] != "mha",
        "norm_topk_prob": text["norm_topk_prob"],
        "head_dim": text["head_dim"]
        not in (None, text["hidden_size"] // text["num_attention_heads"]),
    }
    if any(unsupported.values()):
        raise ReleasedLayoutError(
            "transformers' DeepseekOcr2 cannot hold this model's "
            + ", ".join(name for name, bad in unsupported.items() if bad)
        )
    sam = sam_kwargs(encoder)
    layers = text["num_hidden_layers"]
    dense = min(text["first_k_dense_replace"], layers)
    from transformers import DeepseekOcr2Config  # only writing this layout needs transformers

    config = DeepseekOcr2Config(
        text_config={
            **{key: text[zoo] for key, zoo in TEXT_KEYS},
            "num_key_value_heads": text["num_attention_heads"],
            "mlp_layer_types": ["dense"] * dense + ["sparse"] * (layers - dense),
            "rope_parameters": {"rope_type": "default", "rope_theta": float(text["rope_theta"])},
            "max_position_embeddings": 8192,
        },
        vision_config={
            "sam_config": {key: json_ready(sam[zoo]) for key, zoo in SAM_KEYS},
            "encoder_config": {
                **{key: lm[zoo] for key, zoo in ENCODER_KEYS},
                "rope_parameters": {"rope_type": "default", "rope_theta": float(lm["rope_theta"])},
            },
        },
        image_token_id=image_token_id,
    )
    for sub in (
        config,
        config.text_config,
        config.vision_config,
        config.vision_config.sam_config,
        config.vision_config.encoder_config,
    ):
        sub._attn_implementation = "sdpa"
    return config


def transformers_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A zoo DeepSeek-OCR 2's weights in a loaded ``DeepseekOcr2ForConditionalGeneration``'s
    (runtime) names; tensors are shared, except the transposed expert stacks."""
    vision, unmatched = rename_state_dict(model.encoder.state_dict(), TRANSFORMERS_FROM_CAUSAL_FLOW)
    if unmatched:
        raise KeyError(f"no transformers name for encoder weights {unmatched[:5]}")
    projector = model.projector.layers
    return {
        **vision,
        **zoo_to_transformers(model.decoder.state_dict()),
        "model.multi_modal_projector.weight": projector.weight.detach(),
        "model.multi_modal_projector.bias": projector.bias.detach(),
        "model.view_separator": model.view_separator.detach(),
    }

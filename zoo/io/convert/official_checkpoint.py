"""The released DeepSeek-OCR (v1) and DeepSeek-OCR-2 (v2) checkpoint layout <-> zoo models.

A released folder holds ``config.json`` (``model_type: deepseek_vl_v2``; the vision tower named
by ``vision_config.model_name``: ``deeplip_b_l`` for v1, ``deepencoderv2`` for v2) and
safetensors whose names are rooted at ``model.`` (plus ``lm_head``). This module translates
both halves: the config to and from a :func:`zoo.model.build.build_model` config, and whole-model
tensor names to and from an :class:`zoo.model.ocr_model.OCRModel`'s.

The official code reads only some config fields and hard-codes the rest (the v2 release's
config even says ``downsample_channels: [512, 1024]`` while its ``net_3`` has 896 outputs: the
Qwen2 width, which is what is used here). Sizes the official fields cannot express (a tiny SAM's
window, a reduced Qwen2 encoder, a non-default view mode) are written as extra keys next to the
official ones, which the official code ignores; a released config has none and gets the
release's values.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from decoders.deepseek_moe import DeepseekMoEDecoder
from encoders.causal_flow import DEFAULT_TOKENIZER as V2_TOKENIZER
from encoders.causal_flow import CausalFlowEncoder
from encoders.clip import ClipOverFeatureMap
from encoders.deepencoder import DEFAULT_TOKENIZER as V1_TOKENIZER
from encoders.sam import SamViTB
from zoo.io.convert.deepseek_decoder import (
    StackExperts,
    is_decoder_key,
    iter_official_to_zoo,
    official_config_to_kwargs,
    stack_experts,
    zoo_to_official,
)
from zoo.io.convert.deepseek_ocr2_vision import CAUSAL_FLOW_FROM_OFFICIAL, OFFICIAL_FROM_CAUSAL_FLOW
from zoo.io.convert.deepseek_ocr_vision import (
    DEEPENCODER_FROM_OFFICIAL_V1,
    OFFICIAL_CLIP_PREFIX,
    OFFICIAL_V1_FROM_DEEPENCODER,
)
from zoo.io.convert.rules import prefixed, rename_key, template_rules

RELEASE_IMAGE_TOKEN_ID = 128815  # <image> in the released tokenizer; the official code fixes it
V1_VISION = "deeplip_b_l"
V2_VISION = "deepencoderv2"
ENCODER_OF_VISION = {V1_VISION: "deepencoder", V2_VISION: "causal_flow"}
VISION_OF_ENCODER = {encoder: vision for vision, encoder in ENCODER_OF_VISION.items()}
DEFAULT_IMAGE_MODE = {"deepencoder": "gundam", "causal_flow": "v2"}
PROJECTORS = ("linear", "mlp_gelu")

# The causal-flow options of the release; a model with other values (an ablation) has no
# released layout and is saved in the zoo's own.
RELEASE_CAUSAL_FLOW_OPTIONS = {
    "mask": "causal_flow",
    "query_ratio": None,
    "query_init": "learned",
    "query_positions": "continue",
    "with_queries": True,
}

# (official config key, zoo constructor argument) of each vision part; the first keys of each
# are the official fields, the others the zoo's extra keys.
SAM_KEYS = (
    ("width", "width"),
    ("layers", "depth"),
    ("heads", "num_heads"),
    ("global_attn_indexes", "global_attn_indexes"),
    ("downsample_channels", "downsample_channels"),
    ("image_size", "img_size"),
    ("patch_size", "patch_size"),
    ("window_size", "window_size"),
    ("neck_dim", "neck_dim"),
    ("mlp_ratio", "mlp_ratio"),
)
CLIP_KEYS = (
    ("width", "width"),
    ("layers", "depth"),
    ("heads", "num_heads"),
    ("mlp_dim", "mlp_dim"),
    ("native_grid", "native_grid"),
)
QWEN2_KEYS = (
    ("dim", "hidden_size"),
    ("layers", "num_layers"),
    ("heads", "num_heads"),
    ("kv_heads", "num_kv_heads"),
    ("intermediate_size", "intermediate_size"),
    ("rope_theta", "rope_theta"),
    ("rms_norm_eps", "rms_norm_eps"),
    ("query_sets", "query_sets"),
)
VISION_WIDTH_ENTRIES = {"sam": "sam_vit_b", "clip": "clip-l-14-224", "qwen2": "qwen2-0-5b"}


class ReleasedLayoutError(ValueError):
    """A config or tensor set that is not (or cannot become) the released layout."""


def resolved_kwargs(cls: type, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Every constructor argument of ``cls``: its defaults overlaid with ``kwargs``."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(cls).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    return {**defaults, **{k: v for k, v in kwargs.items() if k != "name"}}


def sam_kwargs(encoder: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved SAM tokenizer arguments of a ``causal_flow`` or ``deepencoder`` config."""
    default = V2_TOKENIZER if encoder["name"] == "causal_flow" else V1_TOKENIZER
    tokenizer = dict(encoder.get("tokenizer") or default)
    if tokenizer.get("name") != "sam_vitb":
        raise ReleasedLayoutError(
            f"the released layouts have a sam_vitb tokenizer, not {tokenizer.get('name')!r}"
        )
    return resolved_kwargs(SamViTB, tokenizer)


def check_release_options(encoder: Mapping[str, Any]) -> None:
    """Refuse a causal-flow encoder whose ablation options the released layouts cannot hold."""
    if encoder["name"] != "causal_flow":
        return
    resolved = resolved_kwargs(CausalFlowEncoder, encoder)
    different = {
        key: resolved[key]
        for key, released in RELEASE_CAUSAL_FLOW_OPTIONS.items()
        if resolved[key] != released
    }
    if different:
        raise ReleasedLayoutError(
            f"encoder options {different} differ from the release "
            f"({RELEASE_CAUSAL_FLOW_OPTIONS}); save this model in the zoo layout"
        )


def _read_part(entry: Mapping[str, Any], keys: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return {zoo: entry[official] for official, zoo in keys if entry.get(official) is not None}


def _write_part(kwargs: Mapping[str, Any], keys: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return {official: json_ready(kwargs[zoo]) for official, zoo in keys if zoo in kwargs}


def json_ready(value: Any) -> Any:
    """JSON-ready: tuples as lists, mapping keys as strings."""
    if isinstance(value, tuple | list):
        return [json_ready(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    return value


def vision_name(config: Mapping[str, Any]) -> str | None:
    """``deeplip_b_l`` / ``deepencoderv2`` for a released config, else ``None``."""
    vision = config.get("vision_config")
    name = vision.get("model_name") if isinstance(vision, Mapping) else None
    return name if name in ENCODER_OF_VISION else None


def build_config_from_official(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The ``build_model`` config of a released (or released-layout) ``config.json``."""
    name = vision_name(config)
    if name is None:
        raise ReleasedLayoutError(
            f"{source}: vision_config.model_name must be one of {sorted(ENCODER_OF_VISION)}"
        )
    widths = config["vision_config"].get("width") or {}
    sam = _read_part(widths.get(VISION_WIDTH_ENTRIES["sam"]) or {}, SAM_KEYS)
    encoder_name = ENCODER_OF_VISION[name]
    if encoder_name == "causal_flow":
        encoder = {
            "name": encoder_name,
            **_read_part(widths.get(VISION_WIDTH_ENTRIES["qwen2"]) or {}, QWEN2_KEYS),
        }
        # The compressor's output is the encoder width, whatever the release's config says.
        mid = sam.get("downsample_channels", V2_TOKENIZER["downsample_channels"])[0]
        hidden = encoder.get("hidden_size", resolved_kwargs(CausalFlowEncoder, {})["hidden_size"])
        sam["downsample_channels"] = [mid, hidden]
    else:
        encoder = {
            "name": encoder_name,
            "clip": _read_part(widths.get(VISION_WIDTH_ENTRIES["clip"]) or {}, CLIP_KEYS),
        }
    encoder["tokenizer"] = {"name": "sam_vitb", **sam}
    language = config.get("language_config") or config
    return {
        "encoder": encoder,
        "projector": _projector_from_official(config.get("projector_config") or {}, source),
        "decoder": {"name": "deepseek_moe", **official_config_to_kwargs(language)},
        "model": {
            "image_mode": config.get("zoo_image_mode", DEFAULT_IMAGE_MODE[encoder_name]),
            "image_token_id": config.get("image_token_id", RELEASE_IMAGE_TOKEN_ID),
        },
    }


def _projector_from_official(projector: Mapping[str, Any], source: str) -> dict[str, Any]:
    kind = projector.get("projector_type", "linear")
    if kind not in PROJECTORS:
        raise ReleasedLayoutError(
            f"{source}: projector_type {kind!r} is not supported; valid: {list(PROJECTORS)}"
        )
    node: dict[str, Any] = {"name": kind}
    if kind == "mlp_gelu":
        node["depth"] = projector.get("depth", 2)
    return node


def official_config(build: Mapping[str, Any], image_token_id: int) -> dict[str, Any]:
    """A released-layout ``config.json`` for the model ``build`` describes.

    Raises :class:`ReleasedLayoutError` for parts the released layout does not have.
    """
    encoder = build["encoder"]
    if encoder["name"] not in VISION_OF_ENCODER:
        raise ReleasedLayoutError(
            f"the released layouts hold a {' or '.join(VISION_OF_ENCODER)} encoder, not "
            f"{encoder['name']!r}"
        )
    check_release_options(encoder)
    if build["decoder"]["name"] != "deepseek_moe":
        raise ReleasedLayoutError(
            f"the released layouts hold a deepseek_moe decoder, not {build['decoder']['name']!r}"
        )
    projector = build.get("projector") or {"name": "linear"}
    if projector["name"] not in PROJECTORS:
        raise ReleasedLayoutError(
            f"the released layouts hold a {' or '.join(PROJECTORS)} projector, not "
            f"{projector['name']!r}"
        )
    widths = {VISION_WIDTH_ENTRIES["sam"]: _write_part(sam_kwargs(encoder), SAM_KEYS)}
    if encoder["name"] == "causal_flow":
        qwen2 = resolved_kwargs(CausalFlowEncoder, encoder)
        if qwen2["query_sets"] is None:
            del qwen2["query_sets"]
        widths[VISION_WIDTH_ENTRIES["qwen2"]] = _write_part(qwen2, QWEN2_KEYS)
    else:
        clip = resolved_kwargs(ClipOverFeatureMap, encoder.get("clip") or {})
        widths[VISION_WIDTH_ENTRIES["clip"]] = _write_part(clip, CLIP_KEYS)
    config: dict[str, Any] = {
        "model_type": "deepseek_vl_v2",
        "architectures": [
            "DeepseekOCR2ForCausalLM"
            if encoder["name"] == "causal_flow"
            else "DeepseekOCRForCausalLM"
        ],
        "vision_config": {
            "model_name": VISION_OF_ENCODER[encoder["name"]],
            "model_type": "vision",
            "image_size": widths[VISION_WIDTH_ENTRIES["sam"]]["image_size"],
            "width": widths,
        },
        "projector_config": {
            "model_type": "mlp_projector",
            "projector_type": projector["name"],
            **({"depth": projector.get("depth", 2)} if projector["name"] == "mlp_gelu" else {}),
        },
        "language_config": language_config(build["decoder"]),
        "tile_tag": "2D",
        "global_view_pos": "head",
        "image_token_id": image_token_id,
    }
    image_mode = (build.get("model") or {}).get("image_mode")
    if image_mode not in (None, DEFAULT_IMAGE_MODE[encoder["name"]]):
        config["zoo_image_mode"] = json_ready(image_mode)
    return config


def language_config(decoder: Mapping[str, Any]) -> dict[str, Any]:
    """An official ``language_config`` of a ``deepseek_moe`` decoder config (the inverse of
    :func:`zoo.io.convert.deepseek_decoder.official_config_to_kwargs`)."""
    kwargs = resolved_kwargs(DeepseekMoEDecoder, decoder)
    mla = kwargs.pop("mla") or {}
    use_mla = kwargs.pop("attention") == "mla"
    sequence_level = kwargs.pop("aux_loss_level") == "sequence"
    return {
        **json_ready(kwargs),
        "num_key_value_heads": kwargs["num_attention_heads"],
        "seq_aux": sequence_level,
        "use_mla": use_mla,
        **json_ready(mla),
    }


# --- tensor names -------------------------------------------------------------------------------

# Whole-model parts outside the encoder and the decoder: (official name, zoo name).
_MODEL_PARTS = (
    ("model.projector.", "projector."),
    ("model.view_seperator", "view_separator"),
    ("model.image_newline", "image_newline"),
)
_VISION_FROM_OFFICIAL = {
    "causal_flow": CAUSAL_FLOW_FROM_OFFICIAL,
    "deepencoder": DEEPENCODER_FROM_OFFICIAL_V1,
}
_OFFICIAL_FROM_VISION = {
    "causal_flow": OFFICIAL_FROM_CAUSAL_FLOW,
    "deepencoder": OFFICIAL_V1_FROM_DEEPENCODER,
}
# Stored by v1 but never read (the SAM map replaces CLIP's pixel patchify).
V1_UNUSED = OFFICIAL_CLIP_PREFIX + "embeddings.patch_embedding.weight"


def official_to_zoo_tensors(
    tensors: Mapping[str, torch.Tensor], encoder_name: str
) -> dict[str, torch.Tensor]:
    """Released-layout tensors in an ``OCRModel``'s names (per-expert tensors stacked).

    Raises :class:`ReleasedLayoutError` listing the names that belong to no part.
    """
    return dict(iter_official_to_zoo_tensors(tensors, encoder_name))


def iter_official_to_zoo_tensors(
    tensors: Mapping[str, torch.Tensor], encoder_name: str, stack: StackExperts = stack_experts
) -> Iterator[tuple[str, torch.Tensor]]:
    """:func:`official_to_zoo_tensors` one tensor at a time (see
    :func:`~zoo.io.convert.deepseek_decoder.iter_official_to_zoo`, which ``stack`` goes to)."""
    rules = [
        *template_rules(_MODEL_PARTS),
        *prefixed("", "encoder.", _VISION_FROM_OFFICIAL[encoder_name]),
    ]
    unknown = []
    for key, tensor in tensors.items():
        if is_decoder_key(key) or (encoder_name == "deepencoder" and key == V1_UNUSED):
            continue
        renamed = rename_key(key, rules)
        if renamed is None:
            unknown.append(key)
        else:
            yield renamed, tensor
    if unknown:
        raise ReleasedLayoutError(
            f"{len(unknown)} tensors belong to no part of a {encoder_name} model: {unknown[:10]}"
        )
    yield from iter_official_to_zoo(tensors, stack, prefix="decoder.")


def zoo_to_official_tensors(
    state_dict: Mapping[str, torch.Tensor], encoder_name: str
) -> dict[str, torch.Tensor]:
    """An ``OCRModel``'s tensors in the released names (experts split per expert)."""
    rules = [
        *template_rules(_MODEL_PARTS, reverse=True),
        *prefixed("encoder.", "", _OFFICIAL_FROM_VISION[encoder_name]),
    ]
    decoder = {k[len("decoder.") :]: v for k, v in state_dict.items() if k.startswith("decoder.")}
    out = zoo_to_official(decoder)
    for key, tensor in state_dict.items():
        if key.startswith("decoder."):
            continue
        renamed = rename_key(key, rules)
        if renamed is None:
            raise ReleasedLayoutError(f"zoo tensor {key!r} has no name in the released layout")
        out[renamed] = tensor
    if encoder_name == "deepencoder":
        width = state_dict["encoder.clip.class_embedding"].shape[0]
        out[V1_UNUSED] = torch.zeros(width, 3, 14, 14, dtype=state_dict["view_separator"].dtype)
    return out

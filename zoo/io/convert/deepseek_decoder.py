"""DeepSeek-3B-MoE decoder weights: zoo layout <-> official release <-> transformers' DeepseekOcr2.

Zoo keys are relative to the decoder root (``embed_tokens.weight``, ``layers.N.…``,
``norm.weight``, ``lm_head.weight``). The other layouts are whole-model keys:

* official (``deepseek-ai/DeepSeek-OCR``, ``-OCR-2``): the decoder is under ``model.``
  (``model.embed_tokens``, ``model.layers.N``, ``model.norm``) plus top-level ``lm_head``;
  ``model.`` is stripped. Experts are separate tensors ``mlp.experts.E.{gate,up,down}_proj``.
* transformers (``DeepseekOcr2ForConditionalGeneration``): the decoder is under
  ``model.language_model.`` plus top-level ``lm_head``; ``model.language_model.`` is stripped
  (the ``prefix`` argument; ``"model."`` for transformers' ``DeepseekV2ForCausalLM``).
  Experts are stacked ``mlp.experts.gate_up_proj`` ``[E, 2I, H]`` and ``down_proj`` ``[E, H, I]``.

Both name the router ``mlp.gate``; the zoo calls it ``mlp.router``. The zoo stacks experts
input-major: ``mlp.experts.w_gate_up`` ``[E, H, 2I]`` (gate columns first) and
``mlp.experts.w_down`` ``[E, I, H]``. ``*_to_zoo`` read only the decoder's keys of a
whole-model state dict (vision keys are left to their own converters) and fail on a decoder
key they do not know.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from zoo.io.convert.rules import RenameRule, rename_key

# Keys that differ only by prefix (relative to a layout's decoder root), and the router rename.
_SAME_NAME = RenameRule(
    r"(lm_head\.weight|embed_tokens\.weight|norm\.weight|layers\.\d+\."
    r"(?:self_attn\.\w+|input_layernorm|post_attention_layernorm"
    r"|mlp\.(?:shared_experts\.)?(?:gate|up|down)_proj)\.weight)",
    r"\1",
)
_TO_ZOO = (
    RenameRule(r"layers\.(\d+)\.mlp\.gate\.weight", r"layers.\1.mlp.router.weight"),
    _SAME_NAME,
)
_FROM_ZOO = (
    RenameRule(r"layers\.(\d+)\.mlp\.router\.weight", r"layers.\1.mlp.gate.weight"),
    _SAME_NAME,
)
_ZOO_EXPERTS = re.compile(r"layers\.(\d+)\.mlp\.experts\.(w_gate_up|w_down)")
_OFFICIAL_EXPERTS = re.compile(r"layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight")
_TRANSFORMERS_EXPERTS = re.compile(r"layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)")

OFFICIAL_PREFIX = "model."
TRANSFORMERS_PREFIX = "model.language_model."
LM_HEAD = "lm_head.weight"
_BODY = ("embed_tokens.", "layers.", "norm.")

# One expert's ``[rows, in]`` matrix and where it goes in a stack stored ``[E, out, in]``:
# ``(expert, first row, matrix)``.
ExpertRows = tuple[int, int, torch.Tensor]
StackExperts = Callable[[str, tuple[int, int, int], list[ExpertRows]], dict[str, torch.Tensor]]


def stack_experts(
    name: str,
    shape: tuple[int, int, int],
    pieces: list[ExpertRows],
    release: Callable[[torch.Tensor], None] = lambda tensor: None,
) -> dict[str, torch.Tensor]:
    """``{name: stack}``: the experts' ``[out, in]`` matrices copied as they are into one
    preallocated ``shape`` tensor, returned as its input-major-shaped view (output-major, see
    :class:`decoders.moe.RoutedExperts`); ``release`` is called on each piece once copied."""
    stacked = pieces[0][2].new_empty(shape)
    for expert, row, matrix in pieces:
        stacked[expert, row : row + matrix.shape[0]] = matrix
        release(matrix)
    return {name: stacked.transpose(1, 2)}


def is_decoder_key(key: str, prefix: str = OFFICIAL_PREFIX) -> bool:
    """Whether a whole-model ``key`` belongs to the decoder of a layout rooted at ``prefix``."""
    return key == LM_HEAD or (key.startswith(prefix) and key[len(prefix) :].startswith(_BODY))


def _decoder_entries(
    state_dict: Mapping[str, torch.Tensor], prefix: str
) -> Iterator[tuple[str, str, torch.Tensor]]:
    """``(key, key relative to the decoder root, tensor)`` for the decoder's keys under ``prefix``
    (plus the top-level LM head); other keys (vision, projector) are skipped."""
    for key, tensor in state_dict.items():
        if is_decoder_key(key, prefix):
            yield key, key if key == LM_HEAD else key[len(prefix) :], tensor


def _rename(key: str, rest: str, rules: tuple[RenameRule, ...], layout: str) -> str:
    renamed = rename_key(rest, rules)
    if renamed is None:
        raise KeyError(f"{layout} decoder key {key!r} is not a DeepSeek-MoE decoder weight")
    return renamed


def official_to_zoo(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Decoder weights of an official checkpoint, in zoo names (per-expert tensors stacked)."""
    return dict(iter_official_to_zoo(state_dict))


def iter_official_to_zoo(
    state_dict: Mapping[str, torch.Tensor], stack: StackExperts = stack_experts, prefix: str = ""
) -> Iterator[tuple[str, torch.Tensor]]:
    """:func:`official_to_zoo` one tensor at a time under ``prefix``, each layer's expert
    stacks last and made one at a time by ``stack`` (:func:`stack_experts`; a loader's may
    convert or quantize each expert as it copies it), so that a caller can convert each
    tensor before the next is made."""
    experts: dict[int, dict[tuple[int, str], torch.Tensor]] = defaultdict(dict)
    for key, rest, tensor in _decoder_entries(state_dict, OFFICIAL_PREFIX):
        match = _OFFICIAL_EXPERTS.fullmatch(rest)
        if match:
            experts[int(match[1])][(int(match[2]), match[3])] = tensor
        else:
            yield prefix + _rename(key, rest, _TO_ZOO, "official"), tensor
    for layer, parts in experts.items():
        for name, shape, pieces in _expert_pieces(layer, parts):
            yield from stack(prefix + name, shape, pieces).items()


def _expert_pieces(
    layer: int, parts: Mapping[tuple[int, str], torch.Tensor]
) -> list[tuple[str, tuple[int, int, int], list[ExpertRows]]]:
    """Per-expert ``[I, H]``/``[H, I]`` tensors of one layer -> the zoo's two stacks, as
    ``(name, stored shape, pieces)``: ``w_gate_up`` stored ``[E, 2I, H]`` (gate rows first),
    ``w_down`` stored ``[E, H, I]``."""
    count = 1 + max(index for index, _ in parts)
    missing = [
        f"experts.{index}.{name}_proj"
        for index in range(count)
        for name in ("gate", "up", "down")
        if (index, name) not in parts
    ]
    if missing:
        raise KeyError(f"layer {layer} lacks expert weights: {', '.join(missing[:6])}")
    intermediate, hidden = parts[0, "gate"].shape
    prefix = f"layers.{layer}.mlp.experts"
    gate_up = [
        piece
        for index in range(count)
        for piece in ((index, 0, parts[index, "gate"]), (index, intermediate, parts[index, "up"]))
    ]
    down = [(index, 0, parts[index, "down"]) for index in range(count)]
    return [
        (f"{prefix}.w_gate_up", (count, 2 * intermediate, hidden), gate_up),
        (f"{prefix}.w_down", (count, hidden, intermediate), down),
    ]


def _exported_key(key: str, prefix: str) -> str:
    """A zoo key (other than an expert stack) in a layout whose decoder sits under ``prefix``."""
    renamed = _rename(key, key, _FROM_ZOO, "zoo")
    return renamed if key == LM_HEAD else prefix + renamed


def _split_experts(layer: str, name: str, stacked: torch.Tensor) -> dict[str, torch.Tensor]:
    """One zoo expert stack -> the official per-expert ``[I, H]``/``[H, I]`` tensors."""
    prefix = f"{OFFICIAL_PREFIX}layers.{layer}.mlp.experts"
    out = {}
    for index, expert in enumerate(stacked.transpose(1, 2)):
        if name == "w_down":
            out[f"{prefix}.{index}.down_proj.weight"] = expert.clone()
        else:
            gate, up = expert.chunk(2, dim=0)
            out[f"{prefix}.{index}.gate_proj.weight"] = gate.clone()
            out[f"{prefix}.{index}.up_proj.weight"] = up.clone()
    return out


def zoo_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Zoo decoder weights in the official checkpoint's names (experts split per expert)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        match = _ZOO_EXPERTS.fullmatch(key)
        if match is None:
            out[_exported_key(key, OFFICIAL_PREFIX)] = tensor
        else:
            out.update(_split_experts(match[1], match[2], tensor))
    return out


def transformers_to_zoo(
    state_dict: Mapping[str, torch.Tensor], prefix: str = TRANSFORMERS_PREFIX
) -> dict[str, torch.Tensor]:
    """Decoder weights of a transformers ``DeepseekOcr2ForConditionalGeneration``, in zoo names.

    ``prefix="model."`` reads transformers' ``DeepseekV2ForCausalLM`` (MLA layers included).
    """
    out: dict[str, torch.Tensor] = {}
    for key, rest, tensor in _decoder_entries(state_dict, prefix):
        match = _TRANSFORMERS_EXPERTS.fullmatch(rest)
        if match is None:
            out[_rename(key, rest, _TO_ZOO, "transformers")] = tensor
        else:
            name = "w_gate_up" if match[2] == "gate_up_proj" else "w_down"
            out[f"layers.{match[1]}.mlp.experts.{name}"] = tensor.transpose(1, 2).contiguous()
    return out


def zoo_to_transformers(
    state_dict: Mapping[str, torch.Tensor], prefix: str = TRANSFORMERS_PREFIX
) -> dict[str, torch.Tensor]:
    """Zoo decoder weights in transformers' ``DeepseekOcr2ForConditionalGeneration`` names
    (``DeepseekV2ForCausalLM``'s with ``prefix="model."``)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        match = _ZOO_EXPERTS.fullmatch(key)
        if match is None:
            out[_exported_key(key, prefix)] = tensor
        else:
            name = "gate_up_proj" if match[2] == "w_gate_up" else "down_proj"
            stacked = tensor.transpose(1, 2).contiguous()
            out[f"{prefix}layers.{match[1]}.mlp.experts.{name}"] = stacked
    return out


def official_config_to_kwargs(language_config: Mapping[str, Any]) -> dict[str, Any]:
    """``deepseek_moe`` constructor arguments from an official ``language_config`` mapping."""
    kwargs: dict[str, Any] = {
        name: language_config[name]
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "head_dim",
            "intermediate_size",
            "first_k_dense_replace",
            "n_routed_experts",
            "moe_intermediate_size",
            "num_experts_per_tok",
            "n_shared_experts",
            "topk_method",
            "n_group",
            "topk_group",
            "norm_topk_prob",
            "routed_scaling_factor",
            "aux_loss_alpha",
            "rope_theta",
            "rms_norm_eps",
        )
        if language_config.get(name) is not None
    }
    if language_config.get("seq_aux") is not None:
        kwargs["aux_loss_level"] = "sequence" if language_config["seq_aux"] else "batch"
    if language_config.get("use_mla", language_config.get("kv_lora_rank") is not None):
        kwargs["attention"] = "mla"
        kwargs["mla"] = {
            name: language_config[name]
            for name in (
                "q_lora_rank",
                "kv_lora_rank",
                "qk_nope_head_dim",
                "qk_rope_head_dim",
                "v_head_dim",
            )
        }
    return kwargs

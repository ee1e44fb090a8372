"""Names of DeepSeek-OCR 2 vision weights: official release / transformers <-> the zoo's encoder.

The zoo's :class:`encoders.causal_flow.CausalFlowEncoder` holds the SAM tokenizer as
``tokenizer.`` (official SAM module names), the Qwen2-shaped encoder as ``lm.`` (Qwen2 module
names) and one learnable query set per view size as ``queries.<view size>``. Rules here are
relative to that encoder's root; a caller re-roots them with :func:`zoo.io.convert.rules.prefixed`.

Each layout is one list of (other name, zoo name) templates; the rules of both directions are
derived from it. A template matches a name prefix, ``{i}``/``{n}`` stand for integers, and the
rest of the name is carried over unchanged. More specific templates come first, in both
directions, because the first matching rule wins.
"""

from __future__ import annotations

from collections.abc import Mapping

from zoo.io.convert.deepseek_ocr_vision import official_sam_shapes
from zoo.io.convert.rules import prefixed, template_rules

OFFICIAL_PREFIX = "model."
TRANSFORMERS_PREFIX = "model.vision_tower."

# Official DeepSeek-OCR 2 checkpoint, relative to ``model.``.
_OFFICIAL_TEMPLATES = (
    ("sam_model.", "tokenizer."),
    ("qwen2_model.model.model.", "lm."),
    ("qwen2_model.query_{n}.weight", "queries.{n}"),
)

# transformers' SAM encoder (DeepseekOcr2SamVisionEncoder) relative to its root.
_TRANSFORMERS_SAM_TEMPLATES = (
    ("layers.{i}.layer_norm1.", "blocks.{i}.norm1."),
    ("layers.{i}.layer_norm2.", "blocks.{i}.norm2."),
    ("layers.", "blocks."),
    ("patch_embed.projection.", "patch_embed.proj."),
    ("pos_embed", "pos_embed"),
    ("neck.conv1.", "neck.0."),
    ("neck.layer_norm1.", "neck.1."),
    ("neck.conv2.", "neck.2."),
    ("neck.layer_norm2.", "neck.3."),
    ("proj.conv1.", "net_2."),
    ("proj.conv2.", "net_3."),
)

# transformers' DeepseekOcr2VisionModel, relative to its root (``model.vision_tower.``).
_TRANSFORMERS_TEMPLATES = (
    *(("sam_encoder." + hf, "tokenizer." + zoo) for hf, zoo in _TRANSFORMERS_SAM_TEMPLATES),
    ("vision_encoder.", "lm."),
    ("query_{n}_resolution.weight", "queries.{n}"),
)


SAM_FROM_TRANSFORMERS = template_rules(_TRANSFORMERS_SAM_TEMPLATES)
TRANSFORMERS_FROM_SAM = template_rules(_TRANSFORMERS_SAM_TEMPLATES, reverse=True)

# DeepseekOcr2VisionModel names (no ``model.vision_tower.``) <-> zoo encoder names.
CAUSAL_FLOW_FROM_TRANSFORMERS_VISION = template_rules(_TRANSFORMERS_TEMPLATES)
TRANSFORMERS_VISION_FROM_CAUSAL_FLOW = template_rules(_TRANSFORMERS_TEMPLATES, reverse=True)

# Full-model names: official ``model.sam_model.*``/``model.qwen2_model.*`` and transformers'
# ``model.vision_tower.*`` <-> zoo encoder names.
CAUSAL_FLOW_FROM_OFFICIAL = prefixed(OFFICIAL_PREFIX, "", template_rules(_OFFICIAL_TEMPLATES))
OFFICIAL_FROM_CAUSAL_FLOW = prefixed(
    "", OFFICIAL_PREFIX, template_rules(_OFFICIAL_TEMPLATES, reverse=True)
)
CAUSAL_FLOW_FROM_TRANSFORMERS = prefixed(
    TRANSFORMERS_PREFIX, "", CAUSAL_FLOW_FROM_TRANSFORMERS_VISION
)
TRANSFORMERS_FROM_CAUSAL_FLOW = prefixed(
    "", TRANSFORMERS_PREFIX, TRANSFORMERS_VISION_FROM_CAUSAL_FLOW
)


def official_qwen2_encoder_shapes(
    hidden_size: int = 896,
    num_layers: int = 24,
    num_heads: int = 14,
    num_kv_heads: int = 2,
    intermediate_size: int = 4864,
    query_sets: Mapping[int, int] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Official tensor shapes of the Qwen2-shaped encoder and its queries, under ``qwen2_model.``.

    ``query_sets`` maps a view size to its number of queries (official: 768 -> 144,
    1024 -> 256). There is no token embedding; the rotary table is not stored.
    """
    query_sets = {768: 144, 1024: 256} if query_sets is None else query_sets
    head_dim = hidden_size // num_heads
    kv_width = num_kv_heads * head_dim
    layer = {
        "input_layernorm.weight": (hidden_size,),
        "self_attn.q_proj.weight": (hidden_size, hidden_size),
        "self_attn.q_proj.bias": (hidden_size,),
        "self_attn.k_proj.weight": (kv_width, hidden_size),
        "self_attn.k_proj.bias": (kv_width,),
        "self_attn.v_proj.weight": (kv_width, hidden_size),
        "self_attn.v_proj.bias": (kv_width,),
        "self_attn.o_proj.weight": (hidden_size, hidden_size),
        "post_attention_layernorm.weight": (hidden_size,),
        "mlp.gate_proj.weight": (intermediate_size, hidden_size),
        "mlp.up_proj.weight": (intermediate_size, hidden_size),
        "mlp.down_proj.weight": (hidden_size, intermediate_size),
    }
    shapes = {
        f"model.model.layers.{i}.{name}": shape
        for i in range(num_layers)
        for name, shape in layer.items()
    }
    shapes["model.model.norm.weight"] = (hidden_size,)
    shapes.update({f"query_{view}.weight": (n, hidden_size) for view, n in query_sets.items()})
    return shapes


# Every official v2 vision tensor (SAM tokenizer, encoder, queries) with its shape.
OFFICIAL_V2_VISION_SHAPES: dict[str, tuple[int, ...]] = {
    **{f"{OFFICIAL_PREFIX}sam_model.{k}": v for k, v in official_sam_shapes((512, 896)).items()},
    **{f"{OFFICIAL_PREFIX}qwen2_model.{k}": v for k, v in official_qwen2_encoder_shapes().items()},
}

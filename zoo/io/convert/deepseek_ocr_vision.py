"""Names of DeepSeek-OCR (v1) vision weights: the official release <-> the zoo's DeepEncoder.

The release stores the SAM tokenizer under ``model.sam_model.`` and the CLIP stage under
``model.vision_model.``; the zoo's :class:`encoders.deepencoder.DeepEncoder` holds them as
``tokenizer.`` and ``clip.``. The official tensor list below is derived from the module
definitions of the official inference code (deepseek-ai/DeepSeek-OCR, ``deepencoder/``), because
no v1 weight index ships with the project.
"""

from __future__ import annotations

from zoo.io.convert.rules import RenameRule, prefixed, template_rules

OFFICIAL_SAM_PREFIX = "model.sam_model."
OFFICIAL_CLIP_PREFIX = "model.vision_model."
ZOO_TOKENIZER_PREFIX = "tokenizer."
ZOO_CLIP_PREFIX = "clip."

# Template pairs (official name prefix, zoo name prefix) relative to each part; ``{i}`` stands
# for a block index (see :func:`zoo.io.convert.rules.template_rules`).
_CLIP_NAME_PAIRS = (
    ("embeddings.class_embedding", "class_embedding"),
    ("embeddings.position_embedding.weight", "position_embedding"),
    ("pre_layrnorm.", "pre_norm."),
    ("transformer.layers.{i}.layer_norm1.", "blocks.{i}.attn_norm."),
    ("transformer.layers.{i}.self_attn.qkv_proj.", "blocks.{i}.attn.qkv."),
    ("transformer.layers.{i}.self_attn.out_proj.", "blocks.{i}.attn.out."),
    ("transformer.layers.{i}.layer_norm2.", "blocks.{i}.mlp_norm."),
    ("transformer.layers.{i}.mlp.", "blocks.{i}.mlp."),
)

CLIP_FROM_OFFICIAL = template_rules(_CLIP_NAME_PAIRS)
OFFICIAL_FROM_CLIP = template_rules(_CLIP_NAME_PAIRS, reverse=True)
# The zoo's SAM tokenizer keeps the official module names (blocks.N.attn.qkv, neck.0..3, ...).
SAM_FROM_OFFICIAL = [RenameRule(r"(.+)", r"\1")]
OFFICIAL_FROM_SAM = SAM_FROM_OFFICIAL

DEEPENCODER_FROM_OFFICIAL_V1 = prefixed(
    OFFICIAL_SAM_PREFIX, ZOO_TOKENIZER_PREFIX, SAM_FROM_OFFICIAL
) + prefixed(OFFICIAL_CLIP_PREFIX, ZOO_CLIP_PREFIX, CLIP_FROM_OFFICIAL)
OFFICIAL_V1_FROM_DEEPENCODER = prefixed(
    ZOO_TOKENIZER_PREFIX, OFFICIAL_SAM_PREFIX, OFFICIAL_FROM_SAM
) + prefixed(ZOO_CLIP_PREFIX, OFFICIAL_CLIP_PREFIX, OFFICIAL_FROM_CLIP)


def official_sam_shapes(
    compressor_channels: tuple[int, int],
    width: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    patch_size: int = 16,
    img_size: int = 1024,
    window_size: int = 14,
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
    neck_dim: int = 256,
) -> dict[str, tuple[int, ...]]:
    """Official SAM ViT-B tensor shapes, relative to ``model.sam_model.``.

    Global-attention blocks learn relative positions over the whole 64-cell side, windowed
    blocks over a 14-cell window (``2 * side - 1`` offsets each). ``compressor_channels`` are the
    output channels of ``net_2`` and ``net_3``: (512, 1024) in v1, (512, 896) in v2.
    """
    grid = img_size // patch_size
    head_dim = width // num_heads
    shapes: dict[str, tuple[int, ...]] = {
        "pos_embed": (1, grid, grid, width),
        "patch_embed.proj.weight": (width, 3, patch_size, patch_size),
        "patch_embed.proj.bias": (width,),
    }
    for i in range(depth):
        side = grid if i in global_attn_indexes else window_size
        block = {
            "norm1.weight": (width,),
            "norm1.bias": (width,),
            "attn.rel_pos_h": (2 * side - 1, head_dim),
            "attn.rel_pos_w": (2 * side - 1, head_dim),
            "attn.qkv.weight": (3 * width, width),
            "attn.qkv.bias": (3 * width,),
            "attn.proj.weight": (width, width),
            "attn.proj.bias": (width,),
            "norm2.weight": (width,),
            "norm2.bias": (width,),
            "mlp.lin1.weight": (4 * width, width),
            "mlp.lin1.bias": (4 * width,),
            "mlp.lin2.weight": (width, 4 * width),
            "mlp.lin2.bias": (width,),
        }
        shapes.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
    mid_channels, out_channels = compressor_channels
    shapes.update(
        {
            "neck.0.weight": (neck_dim, width, 1, 1),
            "neck.1.weight": (neck_dim,),
            "neck.1.bias": (neck_dim,),
            "neck.2.weight": (neck_dim, neck_dim, 3, 3),
            "neck.3.weight": (neck_dim,),
            "neck.3.bias": (neck_dim,),
            "net_2.weight": (mid_channels, neck_dim, 3, 3),
            "net_3.weight": (out_channels, mid_channels, 3, 3),
        }
    )
    return shapes


def official_clip_shapes(
    width: int = 1024, depth: int = 24, mlp_dim: int = 4096, native_grid: int = 16
) -> dict[str, tuple[int, ...]]:
    """Official CLIP-L tensor shapes read in the forward pass, under to ``model.vision_model.``."""
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.class_embedding": (width,),
        "embeddings.position_embedding.weight": (1 + native_grid * native_grid, width),
        "pre_layrnorm.weight": (width,),
        "pre_layrnorm.bias": (width,),
    }
    for i in range(depth):
        layer = {
            "layer_norm1.weight": (width,),
            "layer_norm1.bias": (width,),
            "self_attn.qkv_proj.weight": (3 * width, width),
            "self_attn.qkv_proj.bias": (3 * width,),
            "self_attn.out_proj.weight": (width, width),
            "self_attn.out_proj.bias": (width,),
            "layer_norm2.weight": (width,),
            "layer_norm2.bias": (width,),
            "mlp.fc1.weight": (mlp_dim, width),
            "mlp.fc1.bias": (mlp_dim,),
            "mlp.fc2.weight": (width, mlp_dim),
            "mlp.fc2.bias": (width,),
        }
        shapes.update({f"transformer.layers.{i}.{name}": shape for name, shape in layer.items()})
    return shapes


# Every official v1 vision tensor the official forward pass reads, with its shape.
OFFICIAL_V1_VISION_SHAPES: dict[str, tuple[int, ...]] = {
    **{OFFICIAL_SAM_PREFIX + k: v for k, v in official_sam_shapes((512, 1024)).items()},
    **{OFFICIAL_CLIP_PREFIX + k: v for k, v in official_clip_shapes().items()},
}

# Stored in the release but never read: CLIP's pixel patchify (the SAM map replaces it). A
# loader drops it; an exporter writes it (e.g. zeros) because the official loaders expect it.
OFFICIAL_V1_UNUSED_VISION_SHAPES: dict[str, tuple[int, ...]] = {
    OFFICIAL_CLIP_PREFIX + "embeddings.patch_embedding.weight": (1024, 3, 14, 14),
}

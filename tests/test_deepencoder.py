"""DeepEncoder (v1): CLIP-L over the SAM map, the 2048-channel concat, official weight names.

The CLIP stage is checked against transformers' ``CLIPEncoder`` (same pre-norm, quick-GELU
blocks) fed with embeddings built as the official code builds them, after loading one random
official-layout state dict through the rename rules into both.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPEncoder

from encoders.clip import ClipOverFeatureMap, resize_grid_positions
from encoders.deepencoder import DeepEncoder
from zoo.io.convert.deepseek_ocr_vision import (
    CLIP_FROM_OFFICIAL,
    DEEPENCODER_FROM_OFFICIAL_V1,
    OFFICIAL_FROM_CLIP,
    OFFICIAL_V1_FROM_DEEPENCODER,
    OFFICIAL_V1_UNUSED_VISION_SHAPES,
    OFFICIAL_V1_VISION_SHAPES,
    official_clip_shapes,
)
from zoo.io.convert.rules import rename_key, rename_state_dict

# v1 modes: view size -> tokens per view (paper, Table 1 / official config.py).
V1_VIEW_TOKENS = {512: 64, 640: 100, 1024: 256, 1280: 400}

TINY_CLIP = {"width": 32, "depth": 2, "num_heads": 4, "mlp_dim": 64, "native_grid": 16}
# Window attention only: the tiny SAM stays cheap at 1280 px (80 x 80 patches).
TINY_SAM = {
    "name": "sam_vitb",
    "width": 16,
    "depth": 2,
    "num_heads": 2,
    "window_size": 8,
    "global_attn_indexes": (),
    "neck_dim": 8,
    "downsample_channels": (16, 32),
}


def tiny_deepencoder(**clip_overrides: int) -> DeepEncoder:
    torch.manual_seed(0)
    return DeepEncoder(tokenizer=TINY_SAM, clip={**TINY_CLIP, **clip_overrides}).eval()


def random_official_clip_state(clip: dict[str, int]) -> dict[str, torch.Tensor]:
    """An official-layout (``model.vision_model.``-relative) CLIP state dict of random values."""
    shapes = official_clip_shapes(
        clip["width"], clip["depth"], clip["mlp_dim"], clip["native_grid"]
    )
    generator = torch.Generator().manual_seed(1)
    return {name: torch.randn(shape, generator=generator) * 0.2 for name, shape in shapes.items()}


def reference_clip(
    official: dict[str, torch.Tensor], clip: dict[str, int], feature_map: torch.Tensor
) -> torch.Tensor:
    """The official CLIP-over-SAM forward: official embeddings + transformers' CLIP blocks."""
    width, grid = clip["width"], feature_map.shape[-1]
    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=clip["mlp_dim"],
        num_hidden_layers=clip["depth"],
        num_attention_heads=clip["num_heads"],
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    config._attn_implementation = "eager"
    encoder = CLIPEncoder(config).eval()
    layers = {}
    for name, tensor in official.items():
        if not name.startswith("transformer.layers."):
            continue
        local = name.removeprefix("transformer.")
        if ".qkv_proj." in local:  # official view: [q heads; k heads; v heads]
            for part, chunk in zip(("q", "k", "v"), tensor.chunk(3, dim=0), strict=True):
                layers[local.replace("qkv_proj", f"{part}_proj")] = chunk
        else:
            layers[local] = tensor
    encoder.load_state_dict(layers, strict=True)

    native = clip["native_grid"]
    positions = official["embeddings.position_embedding.weight"]
    grid_positions = positions[1:].reshape(1, native, native, width).permute(0, 3, 1, 2)
    grid_positions = F.interpolate(
        grid_positions, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False
    )
    positions = torch.cat([positions[:1], grid_positions.flatten(2).transpose(1, 2)[0]])
    tokens = torch.cat(
        [
            official["embeddings.class_embedding"].expand(feature_map.shape[0], 1, width),
            feature_map.flatten(2).transpose(1, 2),
        ],
        dim=1,
    )
    tokens = F.layer_norm(
        tokens + positions,
        (width,),
        official["pre_layrnorm.weight"],
        official["pre_layrnorm.bias"],
        eps=1e-5,
    )
    return encoder(tokens).last_hidden_state


@pytest.mark.parametrize("grid", [10, 16])
def test_clip_stage_matches_official_forward_with_converted_weights(grid):
    clip = {"width": 32, "depth": 2, "num_heads": 4, "mlp_dim": 64, "native_grid": 16}
    official = random_official_clip_state(clip)
    renamed, unmatched = rename_state_dict(official, CLIP_FROM_OFFICIAL)
    assert unmatched == []
    model = ClipOverFeatureMap(**clip).eval()
    model.load_state_dict(renamed, strict=True)
    feature_map = torch.randn(2, 32, grid, grid)
    with torch.no_grad():
        ours = model(feature_map)
        expected = reference_clip(official, clip, feature_map)
    assert ours.shape == (2, 1 + grid * grid, 32)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_clip_rules_round_trip():
    official = random_official_clip_state(TINY_CLIP)
    renamed, _ = rename_state_dict(official, CLIP_FROM_OFFICIAL)
    back, unmatched = rename_state_dict(renamed, OFFICIAL_FROM_CLIP)
    assert unmatched == [] and back.keys() == official.keys()


def test_position_interpolation_for_640_tiles_is_antialiased_bicubic():
    native, width = 16, 8
    table = torch.randn(1 + native * native, width)
    resized = resize_grid_positions(table, native, 10, 10)  # a 640 view: 10 x 10 cells
    grid = table[1:].T.reshape(1, width, native, native)
    direct = F.interpolate(grid, size=(10, 10), mode="bicubic", antialias=True, align_corners=False)
    assert resized.shape == (101, width)
    torch.testing.assert_close(resized[0], table[0])  # the class position is not resized
    torch.testing.assert_close(resized[1:], direct.reshape(width, 100).T)
    without_antialias = F.interpolate(grid, size=(10, 10), mode="bicubic", align_corners=False)
    assert not torch.allclose(resized[1:], without_antialias.reshape(width, 100).T)
    assert resize_grid_positions(table, native, native, native) is table  # 1024 view: native


def test_clip_rejects_a_map_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"\[B, 32, h, w\].*got shape \(1, 16, 4, 4\)"):
        ClipOverFeatureMap(**TINY_CLIP)(torch.randn(1, 16, 4, 4))


@pytest.mark.parametrize("view_size", sorted(V1_VIEW_TOKENS))
def test_token_counts_and_width_for_every_v1_view_size(view_size):
    encoder = tiny_deepencoder()
    with torch.no_grad():
        tokens = encoder(torch.randn(1, 3, view_size, view_size))
    assert encoder.num_tokens(view_size) == V1_VIEW_TOKENS[view_size]
    assert tokens.shape == (1, V1_VIEW_TOKENS[view_size], encoder.out_dim)
    assert encoder.out_dim == 32 + 32


def test_clip_channels_come_first_and_the_class_token_is_dropped():
    encoder = tiny_deepencoder(depth=0)
    with torch.no_grad():
        encoder.clip.position_embedding.zero_()
        encoder.clip.class_embedding.fill_(100.0)  # would stand out if it leaked into the output
        pixels = torch.randn(2, 3, 512, 512)
        tokens = encoder(pixels)
        sam_tokens = encoder.tokenizer(pixels)
    # With no blocks and no positions, CLIP's token k is layer_norm(SAM token k): aligned cells.
    torch.testing.assert_close(tokens[..., :32], F.layer_norm(sam_tokens, (32,), eps=1e-5))
    torch.testing.assert_close(tokens[..., 32:], sam_tokens)

    with torch.no_grad():
        encoder.clip.pre_norm.weight.zero_()
        encoder.clip.pre_norm.bias.zero_()  # CLIP part now exactly zero
        tokens = encoder(pixels)
    assert torch.count_nonzero(tokens[..., :32]) == 0
    torch.testing.assert_close(tokens[..., 32:], sam_tokens)


def test_tokenizer_and_clip_width_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'sam_vitb' outputs 32 channels.*CLIP stage is 48 wide"):
        DeepEncoder(tokenizer=TINY_SAM, clip={**TINY_CLIP, "width": 48})


def test_tokenizer_spec_without_a_name_is_refused():
    with pytest.raises(ValueError, match="must name a registered encoder"):
        DeepEncoder(tokenizer={"width": 16})


def clip_l_parameter_count(width=1024, depth=24, mlp_dim=4096, native_grid=16) -> int:
    """CLIP-L/14 without its unused pixel patchify, counted from the architecture."""
    attention = (3 * width * width + 3 * width) + (width * width + width)
    mlp = (width * mlp_dim + mlp_dim) + (mlp_dim * width + width)
    norms = 2 * 2 * width
    embeddings = width + (1 + native_grid * native_grid) * width + 2 * width  # + pre-norm
    return depth * (attention + mlp + norms) + embeddings


def test_full_clip_stage_parameter_count_on_meta():
    with torch.device("meta"):
        clip = ClipOverFeatureMap()
    count = sum(p.numel() for p in clip.parameters())
    assert count == clip_l_parameter_count() == 302_575_616
    assert 300e6 < count < 305e6  # "CLIP-L, 300M" in the paper


def test_full_deepencoder_matches_official_v1_names_and_shapes_one_to_one():
    with torch.device("meta"):
        encoder = DeepEncoder()
    assert encoder.out_dim == 2048
    assert [encoder.num_tokens(s) for s in sorted(V1_VIEW_TOKENS)] == [64, 100, 256, 400]
    ours = {name: tuple(t.shape) for name, t in encoder.state_dict().items()}
    mapped: dict[str, str] = {}
    for official_name, shape in OFFICIAL_V1_VISION_SHAPES.items():
        zoo_name = rename_key(official_name, DEEPENCODER_FROM_OFFICIAL_V1)
        assert zoo_name in ours, f"{official_name} -> {zoo_name} is not a parameter"
        assert ours[zoo_name] == shape, f"{official_name}: {shape} vs {zoo_name}: {ours[zoo_name]}"
        assert rename_key(zoo_name, OFFICIAL_V1_FROM_DEEPENCODER) == official_name
        mapped[zoo_name] = official_name
    assert len(mapped) == len(OFFICIAL_V1_VISION_SHAPES)
    assert sorted(set(ours) - set(mapped)) == []
    for unused in OFFICIAL_V1_UNUSED_VISION_SHAPES:
        assert rename_key(unused, DEEPENCODER_FROM_OFFICIAL_V1) is None


def test_official_v1_vision_list_has_the_released_counts():
    sam = [n for n in OFFICIAL_V1_VISION_SHAPES if n.startswith("model.sam_model.")]
    clip = [n for n in OFFICIAL_V1_VISION_SHAPES if n.startswith("model.vision_model.")]
    # SAM: pos + patch (2) + 12 blocks x 14 + neck (6) + 2 compressor convs; the v2 index of
    # the same SAM lists 179 tensors. CLIP: 4 + 24 layers x 12.
    assert len(sam) == 179 and len(clip) == 4 + 24 * 12
    assert OFFICIAL_V1_VISION_SHAPES["model.sam_model.net_3.weight"] == (1024, 512, 3, 3)
    assert OFFICIAL_V1_VISION_SHAPES["model.sam_model.blocks.2.attn.rel_pos_h"] == (127, 64)
    assert OFFICIAL_V1_VISION_SHAPES["model.sam_model.blocks.0.attn.rel_pos_h"] == (27, 64)

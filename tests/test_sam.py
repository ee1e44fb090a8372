"""SAM ViT-B tokenizer: parity with transformers' DeepSeek-OCR 2 SAM encoder, sizes, counts.

The oracle is ``DeepseekOcr2SamVisionEncoder`` (eager attention, i.e. scores + bias, softmax)
loaded with the zoo model's weights through the rename rules. transformers zero-initialises
the relative and absolute positions, so every weight is randomised first.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.deepseek_ocr2.configuration_deepseek_ocr2 import (
    DeepseekOcr2SamVisionConfig,
)
from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2SamVisionEncoder

from encoders.sam import (
    PatchEmbed,
    SamAttention,
    SamViTB,
    merge_windows,
    partition_windows,
    resize_positions,
)
from zoo.bench.measure import peak_tensor_bytes
from zoo.io.convert.deepseek_ocr2_vision import TRANSFORMERS_FROM_SAM
from zoo.io.convert.rules import rename_state_dict
from zoo.layers.relpos_attention import (
    folded_relpos_sdpa,
    relative_position_factors,
    relpos_sdpa,
)
from zoo.registry import create_encoder

# One windowed and one global block; real patch size, window and view sizes.
TINY_SAM = {
    "width": 32,
    "depth": 2,
    "num_heads": 2,
    "global_attn_indexes": (1,),
    "neck_dim": 16,
    "downsample_channels": (24, 32),
}

# The same model in transformers' configuration names.
TINY_SAM_ORACLE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "global_attn_indexes": [1],
    "output_channels": 16,
    "downsample_channels": [24, 32],
}


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> None:
    """Give every parameter random values of a sensible scale (norm weights around 1)."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in module.named_parameters():
        noise = torch.randn(parameter.shape, generator=generator)
        if parameter.ndim == 1 and name.endswith("weight"):  # norm gains
            parameter.copy_(1 + 0.1 * noise)
        elif parameter.ndim == 1:
            parameter.copy_(0.1 * noise)
        elif "pos" in name or "queries" in name:  # position tables, learnable queries
            parameter.copy_(0.5 * noise)
        else:  # linear and conv weights: unit-variance outputs
            parameter.copy_(noise / parameter[0].numel() ** 0.5)


def transformers_sam(zoo: SamViTB, **config: object) -> DeepseekOcr2SamVisionEncoder:
    """transformers' SAM encoder with the zoo model's weights."""
    hf_config = DeepseekOcr2SamVisionConfig(**config)
    hf_config._attn_implementation = "eager"
    model = DeepseekOcr2SamVisionEncoder(hf_config).eval()
    state, unmatched = rename_state_dict(zoo.state_dict(), TRANSFORMERS_FROM_SAM)
    assert unmatched == []
    model.load_state_dict(state, strict=True)
    return model


def test_matches_transformers_on_1024_768_and_non_square_views():
    zoo = SamViTB(**TINY_SAM).eval()
    randomize_(zoo)
    oracle = transformers_sam(zoo, **TINY_SAM_ORACLE)
    torch.manual_seed(0)
    for (height, width), batch in (((1024, 1024), 2), ((768, 768), 2), ((768, 1024), 1)):
        pixels = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            ours = zoo.forward_features(pixels)
            expected = oracle(pixels).last_hidden_state
        assert ours.shape == (batch, 32, height // 64, width // 64)
        assert ours.std() > 0.1  # a meaningful signal, not a vanishing one
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
        tokens = zoo(pixels)
        torch.testing.assert_close(tokens, ours.flatten(2).transpose(1, 2))


@pytest.mark.parametrize("view,tokens", [(512, 64), (640, 100), (768, 144), (1024, 256)])
def test_num_tokens_matches_the_papers_and_the_forward(view, tokens):
    zoo = SamViTB(**{**TINY_SAM, "global_attn_indexes": ()})
    assert zoo.num_tokens(view) == tokens
    with torch.no_grad():
        assert zoo(torch.zeros(1, 3, view, view)).shape == (1, tokens, 32)


def test_windows_round_trip_with_padding():
    x = torch.randn(2, 10, 9, 3)
    windows = partition_windows(x, 4)  # padded to 12 x 12: 9 windows per image
    assert windows.shape == (18, 4, 4, 3)
    torch.testing.assert_close(windows[0], x[0, :4, :4])
    assert windows[8].abs().sum() > 0 and windows[8, 2:, :].abs().sum() == 0  # bottom padding
    torch.testing.assert_close(merge_windows(windows, 10, 9), x)


def test_position_resize_is_antialiased_bicubic_and_native_grid_is_untouched():
    table = torch.randn(1, 64, 64, 8)
    assert resize_positions(table, 64, 64) is table
    resized = resize_positions(table, 48, 48)
    direct = F.interpolate(
        table.permute(0, 3, 1, 2), (48, 48), mode="bicubic", antialias=True, align_corners=False
    ).permute(0, 2, 3, 1)
    torch.testing.assert_close(resized, direct)


def sam_parameter_count(
    width: int = 768,
    depth: int = 12,
    mlp_dim: int = 3072,
    heads: int = 12,
    grid: int = 64,
    window: int = 14,
    global_blocks: int = 4,
    patch: int = 16,
    neck: int = 256,
    compressor: tuple[int, int] = (512, 896),
) -> int:
    """SAM ViT-B + neck + compressor parameters, from the architecture."""
    head_dim = width // heads
    block = 2 * 2 * width + (3 * width * width + 3 * width) + (width * width + width)
    block += (width * mlp_dim + mlp_dim) + (mlp_dim * width + width)
    rel_pos = global_blocks * 2 * (2 * grid - 1) * head_dim
    rel_pos += (depth - global_blocks) * 2 * (2 * window - 1) * head_dim
    embed = 3 * patch * patch * width + width + grid * grid * width
    neck_params = width * neck + 2 * neck + 9 * neck * neck + 2 * neck
    compress = 9 * neck * compressor[0] + 9 * compressor[0] * compressor[1]
    return depth * block + rel_pos + embed + neck_params + compress


@pytest.mark.parametrize("compressor", [(512, 896), (512, 1024)])
def test_full_size_parameter_count_on_meta(compressor):
    with torch.device("meta"):
        model = create_encoder("sam_vitb", downsample_channels=compressor)
    count = sum(p.numel() for p in model.parameters())
    print(f"SAM ViT-B tokenizer {compressor}: {count / 1e6:.2f}M parameters")
    assert count == sam_parameter_count(compressor=compressor)
    assert 80e6 < count < 97e6
    assert model.out_dim == compressor[1] and model.num_tokens(1024) == 256


def test_rejects_bad_inputs():
    zoo = SamViTB(**TINY_SAM)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\], got shape \(3, 64, 64\)"):
        zoo(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="global_attn_indexes \\[5\\] are outside 0..1"):
        SamViTB(**{**TINY_SAM, "global_attn_indexes": (5,)})


def test_training_gradients_match_transformers():
    """In training on CPU the zoo's attention runs ``DecomposedRelPosAttention``; its gradients
    for the pixels and every weight equal those of transformers' eager attention."""
    zoo = SamViTB(**TINY_SAM).train()
    randomize_(zoo)
    oracle = transformers_sam(zoo, **TINY_SAM_ORACLE).train()
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 3, 512, 384, generator=generator)  # a padded, non-square grid
    weights = torch.randn(1, 32, 8, 6, generator=generator)
    grads = {}
    for name, model in (("zoo", zoo), ("transformers", oracle)):
        given = pixels.clone().requires_grad_()
        out = model(given) if model is oracle else model.forward_features(given)
        out = out.last_hidden_state if model is oracle else out
        (out * weights).sum().backward()
        params = {key: p.grad for key, p in model.named_parameters()}
        grads[name] = (given.grad, params)
    renamed, unmatched = rename_state_dict(grads["zoo"][1], TRANSFORMERS_FROM_SAM)
    assert unmatched == []
    torch.testing.assert_close(grads["zoo"][0], grads["transformers"][0], rtol=1e-4, atol=1e-5)
    assert renamed.keys() == grads["transformers"][1].keys()
    for key, expected in grads["transformers"][1].items():
        torch.testing.assert_close(renamed[key], expected, rtol=1e-3, atol=1e-4, msg=key)


def whole_bias_attention(attention: SamAttention, x: torch.Tensor) -> torch.Tensor:
    """``attention(x)`` as on CUDA: SDPA given the whole bias."""
    count, height, width, channels = x.shape
    qkv = attention.qkv(x).view(count, height * width, 3, attention.num_heads, -1)
    query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    factors = relative_position_factors(
        query, attention.rel_pos_h, attention.rel_pos_w, height, width
    )
    out = relpos_sdpa(query, key, value, *factors).transpose(1, 2)
    return attention.proj(out.reshape(count, height, width, channels))


def test_training_attention_keeps_about_two_score_buffers():
    """A global block's forward + backward on CPU allocates about two ``heads x L x L`` score
    buffers; SDPA given the whole bias (its math path on CPU, the only one passing the bias a
    gradient) takes over three."""
    attention = SamAttention(32, 2, 32)
    randomize_(attention)
    x = torch.randn(1, 32, 32, 32, requires_grad=True)
    score_bytes = 2 * (32 * 32) ** 2 * 4
    zoo_peak = peak_tensor_bytes(lambda: attention(x).sum().backward())
    assert zoo_peak < 2.5 * score_bytes
    assert peak_tensor_bytes(lambda: whole_bias_attention(attention, x).sum().backward()) > (
        3 * score_bytes
    )


def test_inference_attention_builds_the_bias_block_by_block():
    """Without gradients a 4096-token global block never holds its whole bias (128 MiB here);
    the output equals SDPA given the whole bias."""
    attention = SamAttention(32, 2, 64).eval()
    randomize_(attention)
    x = torch.randn(1, 64, 64, 32)
    score_bytes = 2 * (64 * 64) ** 2 * 4
    with torch.no_grad():
        assert peak_tensor_bytes(lambda: attention(x)) < score_bytes / 2
        torch.testing.assert_close(
            attention(x), whole_bias_attention(attention, x), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("grid", [(6, 6), (8, 5)])
def test_the_folded_bias_is_the_same_attention(grid):
    """Folding the bias into the heads (one unmasked SDPA) computes exactly the biased
    attention: float64 to 1e-10, on square and non-square grids."""
    generator = torch.Generator().manual_seed(0)
    height, width = grid
    query, key, value = (
        torch.randn(3, 2, height * width, 16, generator=generator, dtype=torch.float64)
        for _ in range(3)
    )
    rel_h = torch.randn(2 * height - 1, 16, generator=generator, dtype=torch.float64)
    rel_w = torch.randn(2 * width - 1, 16, generator=generator, dtype=torch.float64)
    factors = relative_position_factors(query, rel_h, rel_w, height, width)
    torch.testing.assert_close(
        folded_relpos_sdpa(query, key, value, *factors),
        relpos_sdpa(query, key, value, *factors),
        rtol=1e-10,
        atol=1e-10,
    )


def test_bfloat16_inference_folds_the_bias_and_is_closer_to_float64():
    """A bfloat16 global block on CPU takes the folded path: it never holds the ``L x L`` bias,
    and its error against float64 is below that of the bias rounded to bfloat16 (SDPA given
    the bias as a bfloat16 mask)."""
    attention = SamAttention(64, 2, 64).eval()
    randomize_(attention)
    x = torch.randn(1, 64, 64, 64)
    with torch.no_grad():
        exact = attention.double()(x.double())
        attention.bfloat16()
        score_bytes = 2 * (64 * 64) ** 2 * 2
        assert peak_tensor_bytes(lambda: attention(x.bfloat16())) < score_bytes / 2
        folded_error = (attention(x.bfloat16()).double() - exact).abs().max()
        masked_error = (whole_bias_attention(attention, x.bfloat16()).double() - exact).abs().max()
    assert folded_error < masked_error
    assert folded_error < 0.05 * exact.abs().max()


@pytest.mark.parametrize("view", [(64, 48), (70, 53)], ids=["whole patches", "remainder"])
def test_patch_embedding_is_the_strided_convolution(view):
    """The linear over flattened patches gives the checkpoint's stride-16 convolution, channels
    last, and drops a remainder of fewer than 16 pixels as the convolution does."""
    embed = PatchEmbed(16, 32)
    pixels = torch.randn(2, 3, *view, dtype=torch.float64)
    embed.double()
    expected = embed.proj(pixels).permute(0, 2, 3, 1)
    torch.testing.assert_close(embed(pixels), expected, rtol=1e-12, atol=1e-12)

"""DeepEncoder V2 (``causal_flow``): parity with transformers' DeepseekOcr2VisionModel, query-set
choice, parameter counts and coverage of the released checkpoint's vision weights.

The oracle gets the zoo model's (fully randomised) weights through the zoo -> transformers
rules, so the rules are checked by the same comparison. The full-size encoder's numerics are
checked inside the whole model, on a page with crops, in ``test_released_checkpoints.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers.models.deepseek_ocr2.configuration_deepseek_ocr2 import DeepseekOcr2VisionConfig
from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2VisionModel

from encoders.causal_flow import CausalFlowEncoder, sinusoidal_2d
from masks import additive_mask, xformers_available
from tests.test_sam import TINY_SAM, randomize_, sam_parameter_count
from zoo.io.convert.deepseek_ocr2_vision import (
    CAUSAL_FLOW_FROM_OFFICIAL,
    CAUSAL_FLOW_FROM_TRANSFORMERS,
    CAUSAL_FLOW_FROM_TRANSFORMERS_VISION,
    OFFICIAL_FROM_CAUSAL_FLOW,
    OFFICIAL_V2_VISION_SHAPES,
    TRANSFORMERS_FROM_CAUSAL_FLOW,
    TRANSFORMERS_VISION_FROM_CAUSAL_FLOW,
)
from zoo.io.convert.rules import rename_key, rename_state_dict
from zoo.registry import create_encoder

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHT_INDEX = SHARED / "checkpoints" / "deepseek_ocr2.safetensors.index.json"

TINY_LM = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 64,
}
FULL_LM = {
    "hidden_size": 896,
    "num_layers": 24,
    "num_heads": 14,
    "num_kv_heads": 2,
    "intermediate_size": 4864,
}


def tiny_encoder(**overrides: object) -> CausalFlowEncoder:
    torch.manual_seed(0)
    tokenizer = {"name": "sam_vitb", **TINY_SAM}
    return CausalFlowEncoder(tokenizer=tokenizer, **{**TINY_LM, **overrides}).eval()


def transformers_vision_model(
    zoo: CausalFlowEncoder, meta: bool = False
) -> DeepseekOcr2VisionModel:
    """transformers' DeepSeek-OCR 2 vision model, shaped like ``zoo`` and loaded with its weights.

    ``meta`` builds it without memory and assigns the zoo tensors (no copy, no init cost).
    """
    sam, lm = zoo.tokenizer, zoo.lm
    block0 = lm.layers[0].self_attn
    config = DeepseekOcr2VisionConfig(
        sam_config={
            "hidden_size": sam.patch_embed.proj.out_channels,
            "num_hidden_layers": len(sam.blocks),
            "num_attention_heads": sam.blocks[0].attn.num_heads,
            "global_attn_indexes": [i for i, b in enumerate(sam.blocks) if not b.window_size],
            "output_channels": sam.neck[0].out_channels,
            "downsample_channels": [sam.net_2.out_channels, sam.net_3.out_channels],
        },
        encoder_config={
            "hidden_size": zoo.out_dim,
            "intermediate_size": lm.layers[0].mlp.up_proj.out_features,
            "num_hidden_layers": len(lm.layers),
            "num_attention_heads": block0.num_heads,
            "num_key_value_heads": block0.num_kv_heads,
            "rms_norm_eps": lm.norm.eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
        },
    )
    config._attn_implementation = "sdpa"
    state, unmatched = rename_state_dict(zoo.state_dict(), TRANSFORMERS_VISION_FROM_CAUSAL_FLOW)
    assert unmatched == []
    if not meta:
        model = DeepseekOcr2VisionModel(config)
        model.load_state_dict(state, strict=True)
        return model.eval()
    with torch.device("meta"):
        model = DeepseekOcr2VisionModel(config)
    model.load_state_dict(state, strict=True, assign=True)
    rotary = model.vision_encoder.rotary_emb  # non-persistent buffers stay on meta otherwise
    rotary.inv_freq = lm.rotary.inv_freq.clone()
    rotary.original_inv_freq = lm.rotary.inv_freq.clone()
    return model.eval()


def test_matches_transformers_on_1024_global_and_768_crop_views():
    zoo = tiny_encoder()
    randomize_(zoo)
    oracle = transformers_vision_model(zoo)
    torch.manual_seed(1)
    for view, batch, queries in ((1024, 2, 256), (768, 3, 144)):
        pixels = torch.randn(batch, 3, view, view)
        with torch.no_grad():
            ours = zoo(pixels)
            expected = oracle(pixels).last_hidden_state
        assert ours.shape == (batch, queries, 32) and zoo.num_tokens(view) == queries
        assert ours.std() > 0.5
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_tiny_views_get_their_own_query_set_and_views_do_not_mix_in_a_batch():
    zoo = tiny_encoder(query_sets={256: 16, 512: 64})
    assert zoo.num_tokens(256) == 16 and zoo.num_tokens(512) == 64
    pixels = torch.randn(3, 3, 256, 256)
    with torch.no_grad():
        batched = zoo(pixels)
        alone = zoo(pixels[1:2])
    assert batched.shape == (3, 16, 32)
    torch.testing.assert_close(batched[1:2], alone, rtol=1e-5, atol=1e-5)


def test_query_count_may_differ_from_the_visual_token_count():
    zoo = tiny_encoder(query_sets={256: 9})  # 16 visual tokens read by 9 queries
    with torch.no_grad():
        assert zoo(torch.randn(1, 3, 256, 256)).shape == (1, 9, 32)


def test_an_unserved_token_count_is_an_error_naming_the_sets():
    zoo = tiny_encoder()
    with pytest.raises(ValueError, match=r"no query set serves 64 visual tokens.*768: 144"):
        zoo(torch.randn(1, 3, 512, 512))


def test_query_sets_must_serve_different_token_counts():
    with pytest.raises(ValueError, match="views 1024 and 1000 both serve 256"):
        tiny_encoder(query_sets={1024: 256, 1000: 256})


def test_tokenizer_width_must_equal_the_encoder_width():
    with pytest.raises(ValueError, match="outputs 32-wide tokens but the encoder is 64 wide"):
        tiny_encoder(hidden_size=64)


def test_registered_with_the_release_defaults():
    with torch.device("meta"):
        zoo = create_encoder("causal_flow")
    assert zoo.out_dim == 896 and zoo.tokenizer.out_dim == 896
    assert (zoo.num_tokens(768), zoo.num_tokens(1024)) == (144, 256)


def qwen2_encoder_parameter_count(
    hidden: int = 896,
    layers: int = 24,
    heads: int = 14,
    kv_heads: int = 2,
    intermediate: int = 4864,
    queries: int = 144 + 256,
) -> int:
    """Qwen2-0.5B-shaped encoder without token embedding, plus its query sets."""
    kv_width = kv_heads * hidden // heads
    attention = (hidden * hidden + hidden) + 2 * (hidden * kv_width + kv_width) + hidden * hidden
    layer = attention + 3 * hidden * intermediate + 2 * hidden
    return layers * layer + hidden + queries * hidden


def test_full_size_parameter_counts_on_meta():
    with torch.device("meta"):
        zoo = CausalFlowEncoder()
    tokenizer = sum(p.numel() for p in zoo.tokenizer.parameters())
    encoder = sum(p.numel() for n, p in zoo.named_parameters() if not n.startswith("tokenizer."))
    queries = sum(p.numel() for p in zoo.queries.parameters())
    print(
        f"causal_flow: tokenizer {tokenizer / 1e6:.2f}M, Qwen2 encoder {encoder / 1e6:.2f}M "
        f"(queries {queries / 1e6:.2f}M), total {(tokenizer + encoder) / 1e6:.2f}M"
    )
    assert tokenizer == sam_parameter_count(compressor=(512, 896))
    assert encoder == qwen2_encoder_parameter_count()
    # Qwen2-0.5B is 494M with its 151936 x 896 token embedding, which this encoder drops.
    assert 494e6 - 151936 * 896 - 1e6 < encoder - queries < 494e6 - 151936 * 896 + 1e6
    assert queries == 400 * 896


def released_vision_names() -> list[str]:
    if not WEIGHT_INDEX.is_file():
        pytest.skip(f"the released weight index {WEIGHT_INDEX} is absent (shared/ not present)")
    weight_map = json.loads(WEIGHT_INDEX.read_text())["weight_map"]
    return [n for n in weight_map if n.startswith(("model.sam_model.", "model.qwen2_model."))]


def test_every_released_vision_weight_maps_to_one_parameter_of_its_shape():
    names = released_vision_names()
    with torch.device("meta"):
        zoo = CausalFlowEncoder()
    parameters = dict(zoo.named_parameters())
    renamed = {name: rename_key(name, CAUSAL_FLOW_FROM_OFFICIAL) for name in names}
    assert [n for n, z in renamed.items() if z not in parameters] == []
    assert len(set(renamed.values())) == len(names)  # one parameter per released tensor
    assert set(renamed.values()) == set(parameters)  # and no parameter left over
    assert set(names) == set(OFFICIAL_V2_VISION_SHAPES)
    for name, zoo_name in renamed.items():
        assert tuple(parameters[zoo_name].shape) == OFFICIAL_V2_VISION_SHAPES[name], name
    assert {rename_key(z, OFFICIAL_FROM_CAUSAL_FLOW) for z in parameters} == set(names)


def test_transformers_names_map_one_to_one_with_equal_shapes():
    with torch.device("meta"):
        zoo = CausalFlowEncoder()
        oracle = transformers_vision_model(zoo, meta=True)
    ours = {n: tuple(p.shape) for n, p in zoo.named_parameters()}
    theirs = {n: tuple(p.shape) for n, p in oracle.named_parameters()}
    mapped = {rename_key(n, CAUSAL_FLOW_FROM_TRANSFORMERS_VISION): s for n, s in theirs.items()}
    assert mapped == ours
    full = {"model.vision_tower." + n for n in theirs}
    assert {rename_key(z, TRANSFORMERS_FROM_CAUSAL_FLOW) for z in ours} == full
    assert {rename_key(n, CAUSAL_FLOW_FROM_TRANSFORMERS) for n in full} == set(ours)


# ---- ablation options: attention backends, query counts, initialisation, positions ----------


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("backend", ["eager", "flex", "xformers"])
def test_every_attention_backend_gives_the_default_outputs(backend):
    if backend == "xformers" and not xformers_available():
        pytest.skip("xformers needs the xformers package and a CUDA device")
    pixels = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    outputs = {}
    for name in ("sdpa", backend):
        zoo = tiny_encoder(query_sets={256: 16}, attn_backend=name)
        randomize_(zoo)
        with torch.no_grad():
            outputs[name] = zoo(pixels)
    print(f"{backend} vs sdpa: max abs diff {(outputs[backend] - outputs['sdpa']).abs().max():.2e}")
    torch.testing.assert_close(outputs[backend], outputs["sdpa"], rtol=0, atol=1e-5)


def test_an_unknown_or_unavailable_backend_is_an_error():
    with pytest.raises(ValueError, match=r"unknown attn_backend 'fast'; valid: \['sdpa', 'eager'"):
        tiny_encoder(attn_backend="fast")
    if not xformers_available():
        with pytest.raises(ValueError, match="needs the xformers package and a CUDA device"):
            tiny_encoder(attn_backend="xformers")


def test_return_attention_gives_each_layers_query_over_visual_probabilities():
    zoo = tiny_encoder(query_sets={256: 16}, mask="visual_only_queries")
    randomize_(zoo)
    pixels = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        default = zoo(pixels)
        tokens, attention = zoo(pixels, return_attention=True)
    assert attention.shape == (2, 2, 4, 16, 16)  # [B, layers, heads, queries, visual tokens]
    torch.testing.assert_close(tokens, default, rtol=0, atol=1e-5)
    # these queries see only visual tokens, so their rows over the visual tokens sum to one
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 2, 4, 16))
    with torch.no_grad():
        _, flow_attention = tiny_encoder(query_sets={256: 16})(pixels, return_attention=True)
    assert (flow_attention.sum(-1) < 1 - 1e-3).all()  # causal-flow queries also see queries


def test_query_ratio_sizes_each_set_from_its_views_visual_tokens():
    # tiny views: 256 px -> 16 visual tokens, 192 px -> 9; the ratio replaces the counts
    for ratio, counts in ((0.25, (4, 2)), (0.5, (8, 4)), (1.0, (16, 9)), (2.0, (32, 18))):
        zoo = tiny_encoder(query_sets={256: 16, 192: 9}, query_ratio=ratio)
        assert (zoo.num_tokens(256), zoo.num_tokens(192)) == counts
        with torch.no_grad():
            assert zoo(torch.randn(1, 3, 192, 192)).shape == (1, counts[1], 32)
    with torch.device("meta"):
        release = CausalFlowEncoder(query_ratio=0.25)
    assert (release.num_tokens(768), release.num_tokens(1024)) == (36, 64)
    with pytest.raises(ValueError, match="query_ratio must be > 0, got 0"):
        tiny_encoder(query_ratio=0)


def test_shared_resized_queries_are_one_set_interpolated_to_each_count():
    zoo = tiny_encoder(query_sets={256: 16, 192: 9}, query_init="shared_resized")
    assert [name for name, _ in zoo.queries.named_parameters()] == ["shared"]
    shared = zoo.queries.shared
    assert zoo.queries_for(16) is shared
    resized = zoo.queries_for(9)
    assert resized.shape == (9, 32)
    torch.testing.assert_close(resized[[0, -1]], shared[[0, -1]])  # ends kept (align_corners)
    torch.testing.assert_close(resized[4], (shared[7] + shared[8]) / 2)  # 4 * 15/8 = 7.5
    resized.sum().backward()
    assert shared.grad is not None and shared.grad.abs().sum() > 0


def test_sinusoidal_queries_are_fixed_2d_sin_cos_tables():
    zoo = tiny_encoder(query_sets={256: 16, 192: 9}, query_init="sinusoidal_2d")
    assert list(zoo.queries.parameters()) == []
    assert not any(name.startswith("queries") for name in zoo.state_dict())
    table = sinusoidal_2d(5, 8)  # 3 columns: query 4 is at row 1, column 1
    frequencies = torch.tensor([1.0, 0.01])  # 1 / 10000 ** (i / 2)
    expected = torch.cat([frequencies.sin(), frequencies.cos()] * 2)
    torch.testing.assert_close(table[4], expected)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))
    torch.testing.assert_close(zoo.queries_for(9), sinusoidal_2d(9, 32))
    with pytest.raises(ValueError, match="width divisible by 4, got 30"):
        sinusoidal_2d(4, 30)
    with pytest.raises(ValueError, match=r"unknown query_init 'random'; valid: \['learned'"):
        tiny_encoder(query_init="random")


def test_restarted_query_positions_number_the_queries_from_zero():
    pixels = torch.randn(1, 3, 256, 256)
    zoo = tiny_encoder(query_sets={256: 16}, query_positions="restart")
    randomize_(zoo)
    with torch.no_grad():
        restarted = zoo(pixels)
        sequence = torch.cat([zoo.tokenizer(pixels), zoo.queries_for(16)[None]], dim=1)
        mask = additive_mask(zoo.mask_spec, [("visual", 16), ("query", 16)])
        positions = torch.cat([torch.arange(16), torch.arange(16)])[None]
        expected = zoo.lm(sequence, mask, positions)[:, 16:]
        zoo.query_positions = "continue"
        continued = zoo(pixels)
    torch.testing.assert_close(restarted, expected, rtol=0, atol=0)
    assert (restarted - continued).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"unknown query_positions 'end'; valid: \['continue'"):
        tiny_encoder(query_positions="end")


def test_without_queries_the_lm_reads_the_visual_tokens_as_a_vit():
    zoo = tiny_encoder(query_sets={256: 16}, mask="bidirectional", with_queries=False)
    randomize_(zoo)
    assert zoo.queries is None and zoo.num_tokens(256) == 16 and zoo.num_tokens(192) == 9
    pixels = torch.randn(2, 3, 192, 192)
    with torch.no_grad():
        out = zoo(pixels)
        expected = zoo.lm(zoo.tokenizer(pixels), None)  # SDPA with no mask: all see all
        _, attention = zoo(pixels, return_attention=True)
    assert out.shape == (2, 9, 32)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert attention.shape == (2, 2, 4, 9, 9)


def test_a_window_as_long_as_the_query_set_is_the_causal_flow_mask():
    pixels = torch.randn(1, 3, 256, 256)
    outputs = []
    for mask in ("causal_flow", {"name": "windowed_queries", "window": 16}):
        zoo = tiny_encoder(query_sets={256: 16}, mask=mask)
        randomize_(zoo)
        with torch.no_grad():
            outputs.append(zoo(pixels))
    assert torch.equal(outputs[0], outputs[1])


def test_flex_refuses_to_train_on_the_cpu_with_a_clear_error():
    zoo = tiny_encoder(query_sets={256: 16}, attn_backend="flex")
    with pytest.raises(NotImplementedError, match="'flex' runs forward-only on the CPU"):
        zoo(torch.randn(1, 3, 256, 256))


def test_returned_attention_matches_transformers_eager_attentions():
    zoo = tiny_encoder()
    randomize_(zoo)
    oracle = transformers_vision_model(zoo)
    oracle.set_attn_implementation("eager")
    pixels = torch.randn(1, 3, 768, 768)
    with torch.no_grad():
        tokens, attention = zoo(pixels, return_attention=True)
        sequence = torch.cat([zoo.tokenizer(pixels), zoo.queries_for(144)[None]], dim=1)
        expected = oracle.vision_encoder(sequence, num_patches=144, output_attentions=True)
    over_visual = torch.stack([a[..., 144:, :144] for a in expected.attentions], dim=1)
    assert attention.shape == (1, 2, 4, 144, 144)
    torch.testing.assert_close(attention, over_visual, rtol=0, atol=1e-6)
    torch.testing.assert_close(tokens, expected.last_hidden_state[:, 144:], rtol=0, atol=1e-5)

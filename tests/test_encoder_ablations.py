"""Encoder ablations: patch-unshuffle tokenizer, encoder-decoder queries, output interventions,
and their experiment configs (each builds tiny and trains a step)."""

from __future__ import annotations

import pytest
import torch

from encoders.cross_attention_queries import CrossAttentionQueriesEncoder
from encoders.interventions import INTERVENTIONS, Intervention, attach_intervention
from tests.conftest import compose_train
from zoo.model.build import build_model
from zoo.registry import create_encoder
from zoo.run_setup import make_processor, model_config

TINY_SAM = {
    "name": "sam_vitb",
    "width": 32,
    "depth": 2,
    "num_heads": 2,
    "window_size": 8,
    "global_attn_indexes": [1],
    "neck_dim": 16,
    "downsample_channels": [24, 32],
}
TINY_STACK = {"hidden_size": 32, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 64}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- patch_unshuffle -------------------------------------------------------------------------


def tiny_patch_unshuffle():
    return create_encoder("patch_unshuffle", out_dim=32, embed_dim=8)


def test_patch_unshuffle_token_count_matches_sam():
    tokenizer, sam = tiny_patch_unshuffle(), create_encoder(**TINY_SAM)
    views = [64, 128, 192, 200, 256, 512, 640, 768, 1000, 1024, 1280]
    assert [tokenizer.num_tokens(v) for v in views] == [sam.num_tokens(v) for v in views]


def test_patch_unshuffle_gives_sam_token_grid_and_1024_gives_256():
    tokenizer, sam = tiny_patch_unshuffle(), create_encoder(**TINY_SAM)
    assert tokenizer.num_tokens(1024) == 256 == (1024 // 16) ** 2 // 16
    for view in (192, 200):
        pixels = torch.randn(2, 3, view, view)
        assert tokenizer.forward_features(pixels).shape == sam.forward_features(pixels).shape
        assert tokenizer(pixels).shape == (2, tokenizer.num_tokens(view), 32)


def test_patch_unshuffle_token_reads_only_its_64px_block():
    tokenizer = tiny_patch_unshuffle().eval()
    pixels = torch.randn(1, 3, 128, 128)
    changed = pixels.clone()
    changed[..., 64:, :64] += 1.0  # the block of token (1, 0): row-major token 2
    with torch.no_grad():
        diff = (tokenizer(changed) - tokenizer(pixels)).abs().amax(-1)[0]
    assert diff[2] > 0
    assert torch.equal(diff[[0, 1, 3]], torch.zeros(3))


def test_patch_unshuffle_feeds_deepencoder():
    encoder = create_encoder(
        "deepencoder",
        tokenizer={"name": "patch_unshuffle", "out_dim": 32, "embed_dim": 8},
        clip={"width": 32, "depth": 1, "num_heads": 4, "mlp_dim": 64},
    )
    assert encoder(torch.randn(1, 3, 256, 256)).shape == (1, 16, 64)


# ---- interventions ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_tokens", [6, 7])
def test_swap_halves_twice_is_identity_and_swaps(num_tokens):
    tokens = torch.randn(2, num_tokens, 3)
    swap = Intervention("swap_halves")
    swapped = swap(tokens)
    half = num_tokens // 2
    assert torch.equal(swapped[:, :half], tokens[:, num_tokens - half :])
    assert torch.equal(swapped[:, num_tokens - half :], tokens[:, :half])
    assert torch.equal(swap(swapped), tokens)


@pytest.mark.parametrize("num_tokens", [6, 7])
def test_repeat_first_half(num_tokens):
    tokens = torch.randn(2, num_tokens, 3)
    out = Intervention("repeat_first_half")(tokens)
    half = num_tokens // 2
    assert torch.equal(out[:, : num_tokens - half], tokens[:, : num_tokens - half])
    assert torch.equal(out[:, num_tokens - half :], tokens[:, :half])


def test_shuffle_is_a_seeded_permutation_shared_by_the_batch():
    tokens = torch.arange(16.0)[None, :, None].expand(3, 16, 2)
    out = Intervention("shuffle", seed=3)(tokens)
    order = out[0, :, 0].long()
    assert sorted(order.tolist()) == list(range(16)) and not torch.equal(order, torch.arange(16))
    assert torch.equal(out, tokens[:, order])  # the same order for every view
    assert torch.equal(out, Intervention("shuffle", seed=3)(tokens))
    assert not torch.equal(out, Intervention("shuffle", seed=4)(tokens))


def test_other_image_rolls_the_batch():
    tokens = torch.randn(3, 4, 2)
    out = Intervention("other_image")(tokens)
    assert torch.equal(out[1], tokens[0]) and torch.equal(out[2], tokens[1])
    assert torch.equal(out[0], tokens[2])
    with pytest.warns(UserWarning, match="batch of one view"):
        assert torch.equal(Intervention("other_image")(tokens[:1]), tokens[:1])


def test_unknown_intervention_names_the_choices():
    with pytest.raises(ValueError, match="swap_halves"):
        Intervention("reverse")


def tiny_causal_flow_kwargs():
    return {"tokenizer": TINY_SAM, "num_layers": 1, "query_sets": {256: 16}, **TINY_STACK}


def test_intervened_encoder_keeps_parameter_names_and_intervenes():
    plain = create_encoder("causal_flow", **tiny_causal_flow_kwargs()).eval()
    swapped = create_encoder(
        "intervened", intervention="swap_halves", **tiny_causal_flow_kwargs()
    ).eval()
    assert list(swapped.state_dict()) == list(plain.state_dict())
    swapped.load_state_dict(plain.state_dict())
    pixels = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        expected = plain(pixels)
        assert torch.equal(swapped(pixels), torch.cat([expected[:, 8:], expected[:, :8]], 1))
        tokens, attention = swapped(pixels, return_attention=True)
    assert torch.allclose(tokens, torch.cat([expected[:, 8:], expected[:, :8]], 1), atol=1e-5)
    assert attention.shape == (2, 1, 4, 16, 16)
    assert swapped.num_tokens(256) == plain.num_tokens(256) == 16


def test_an_intervention_attaches_to_a_built_encoder_once():
    """What zoo.evaluate intervention=... does to a loaded checkpoint's encoder."""
    encoder = create_encoder("causal_flow", **tiny_causal_flow_kwargs()).eval()
    pixels = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        expected = encoder(pixels)
        assert attach_intervention(encoder, "other_image") is encoder
        assert torch.equal(encoder(pixels), expected.roll(1, dims=0))
    with pytest.raises(ValueError, match="already has an intervention"):
        attach_intervention(encoder, "shuffle")


# ---- encoder-decoder queries -----------------------------------------------------------------


def tiny_cross_attention(attn_backend: str = "sdpa") -> CrossAttentionQueriesEncoder:
    return create_encoder(
        "cross_attention_queries",
        tokenizer=TINY_SAM,
        num_encoder_layers=1,
        num_decoder_layers=2,
        query_sets={256: 16, 192: 9},
        attn_backend=attn_backend,
        **TINY_STACK,
    ).eval()


def test_cross_attention_queries_shapes_and_counts():
    encoder = tiny_cross_attention()
    assert encoder.num_tokens(256) == 16 and encoder.num_tokens(192) == 9
    assert encoder(torch.randn(2, 3, 192, 192)).shape == (2, 9, 32)
    with pytest.raises(ValueError, match="no query set serves"):
        encoder(torch.randn(1, 3, 128, 128))


def test_cross_attention_queries_are_causal_among_themselves():
    encoder = tiny_cross_attention()
    pixels = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        before = encoder(pixels)
        encoder.queries.get_parameter("256")[10] += 1.0
        after = encoder(pixels)
    changed = (after - before).abs().amax(-1)[0]
    assert torch.equal(changed[:10], torch.zeros(10))
    assert (changed[10:] > 0).all()


def test_every_query_sees_every_visual_token():
    encoder = tiny_cross_attention()
    queries = encoder.queries(256)[None]
    memory = torch.randn(1, 16, 32)
    with torch.no_grad():
        for token in (0, 15):
            moved = memory.clone()
            moved[:, token] += 1.0
            diff = encoder.query_decoder(queries, moved) - encoder.query_decoder(queries, memory)
            assert (diff.abs().amax(-1) > 0).all()


def test_cross_attention_backends_agree():
    sdpa, eager = tiny_cross_attention("sdpa"), tiny_cross_attention("eager")
    eager.load_state_dict(sdpa.state_dict())
    pixels = torch.randn(2, 3, 192, 192)
    with torch.no_grad():
        torch.testing.assert_close(eager(pixels), sdpa(pixels), atol=1e-5, rtol=1e-4)


# ---- experiment configs ----------------------------------------------------------------------

# experiment -> a parameter of the module the ablation adds or swaps in
NEW_MODULE_PARAMETER = {
    "tokenizer_patch_unshuffle": "encoder.tokenizer.proj.weight",
    "tokenizer_timm_convnext": "encoder.tokenizer.model.stem.0.weight",
    "tokenizer_timm_vit": "encoder.tokenizer.compressor.0.weight",
    "clip_stage_over_v2_tokenizer": "encoder.clip.blocks.0.attn.qkv.weight",
    "encoder_decoder_queries": "encoder.query_decoder.layers.0.cross_attn.k_proj.weight",
    "intervention_other_image": "encoder.lm.layers.0.self_attn.q_proj.weight",
}
INTERVENTION_EXPERIMENTS = [f"intervention_{name}" for name in INTERVENTIONS]


@pytest.mark.parametrize("experiment", sorted(NEW_MODULE_PARAMETER))
def test_experiment_builds_tiny_and_trains_a_step(experiment):
    from zoo.data.layout_engine import render_page

    cfg = compose_train([f"experiment={experiment}"])
    model = build_model(model_config(cfg))
    processor = make_processor(cfg)
    pages = [render_page(0, i, page_size=cfg.data.page_size) for i in range(2)]
    batch = processor([p.image for p in pages], [cfg.data.prompt] * 2, [p.markdown for p in pages])
    out = model(batch["input_ids"], batch["images"], batch["attention_mask"], batch["labels"])
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grad = model.get_parameter(NEW_MODULE_PARAMETER[experiment]).grad
    assert grad is not None and grad.abs().sum() > 0
    assert not model.image_mode.newlines  # compared in v2's views and layout


@pytest.mark.parametrize("experiment", INTERVENTION_EXPERIMENTS)
def test_intervention_experiments_wrap_the_causal_flow_encoder(experiment):
    model = build_model(model_config(compose_train([f"experiment={experiment}"])))
    assert type(model.encoder).__name__ == "CausalFlowEncoder"
    assert model.encoder.intervention.name == experiment.removeprefix("intervention_")

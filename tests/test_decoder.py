"""The DeepSeek-MoE decoder against transformers (DeepseekOcr2, DeepseekV2), its converters, the
full-size shapes and counts on the meta device, the balance loss, MLA, and the dense decoder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import (
    DeepseekOcr2Config,
    DeepseekOcr2ForConditionalGeneration,
    DeepseekV2Config,
    DeepseekV2ForCausalLM,
)

from decoders import DeepseekMoEDecoder, DenseDecoder, KVCache, count_parameters
from decoders.attention import build_attention_mask
from decoders.moe import (
    MoEFeedForward,
    RoutedExperts,
    TopKRouter,
    expert_balance_loss,
    grouped_matmul,
    grouped_mm_supported,
    padded_grouped_matmul,
)
from decoders.transformer import default_position_ids
from zoo.io.convert.deepseek_decoder import (
    official_config_to_kwargs,
    official_to_zoo,
    transformers_to_zoo,
    zoo_to_official,
    zoo_to_transformers,
)
from zoo.registry import create_decoder

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY = dict(
    vocab_size=97,
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=96,
    n_routed_experts=8,
    moe_intermediate_size=16,
    num_experts_per_tok=3,
    n_shared_experts=2,
)
TINY_MLA = dict(kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12)


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights large enough that routing and logits differ clearly between tokens."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.copy_(noise * 0.2 if parameter.dim() > 1 else 1 + 0.3 * noise)


def transformers_ocr2(**overrides) -> DeepseekOcr2ForConditionalGeneration:
    """A tiny transformers DeepSeek-OCR-2 (text part as ``TINY``) with random weights."""
    kw = {**TINY, **overrides}
    dense = kw.pop("first_k_dense_replace", 1)
    text = dict(
        kw,
        num_key_value_heads=kw["num_attention_heads"],
        mlp_layer_types=["dense"] * dense + ["sparse"] * (kw["num_hidden_layers"] - dense),
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        max_position_embeddings=256,
    )
    vision = dict(
        sam_config=dict(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            global_attn_indexes=[0],
            output_channels=16,
            downsample_channels=[16, 32],
            image_size=64,
        ),
        encoder_config=dict(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=10,
        ),
    )
    model = DeepseekOcr2ForConditionalGeneration(
        DeepseekOcr2Config(text_config=text, vision_config=vision)
    ).eval()
    randomize(model)
    return model


def zoo_copy(reference: DeepseekOcr2ForConditionalGeneration, **overrides) -> DeepseekMoEDecoder:
    """Our decoder with the reference's weights, loaded through the transformers converter."""
    decoder = DeepseekMoEDecoder(**{**TINY, **overrides}).eval()
    decoder.load_state_dict(transformers_to_zoo(reference.state_dict()), strict=True)
    return decoder


def tiny_dense(attention: str = "mha", mla: dict | None = None) -> DenseDecoder:
    """A two-layer dense decoder of ``TINY``'s widths with random weights, in eval mode."""
    decoder = DenseDecoder(
        **{k: TINY[k] for k in ("vocab_size", "hidden_size", "num_attention_heads")},
        num_hidden_layers=2,
        intermediate_size=96,
        attention=attention,
        mla=mla,
    ).eval()
    randomize(decoder)
    return decoder


def left_padded(batch: int = 3, length: int = 10, seed: int = 1):
    """Random ids and a padding mask whose rows have 0, 3 and 6 padding tokens on the left."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY["vocab_size"], (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):
        mask[row, : 3 * row] = 0
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


ROUTERS = [
    dict(),
    dict(topk_method="group_limited_greedy", n_group=4, topk_group=2, routed_scaling_factor=1.5),
]


@pytest.mark.parametrize("router", ROUTERS, ids=["greedy", "group_limited"])
@pytest.mark.parametrize("padded", [False, True], ids=["no_mask", "left_padding"])
def test_logits_match_transformers_text_model(router, padded):
    reference = transformers_ocr2(**router)
    decoder = zoo_copy(reference, **router)
    ids, mask = left_padded()
    if not padded:
        mask = torch.ones_like(mask)
    with torch.no_grad():
        hidden = reference.model.language_model(
            input_ids=ids, attention_mask=mask, position_ids=positions(mask)
        ).last_hidden_state
        expected = reference.lm_head(hidden)
        logits = decoder(decoder.embed(ids), attention_mask=mask if padded else None).logits
    real = mask.bool()
    assert expected[real].std() > 0.5  # the weights are not so small that everything agrees
    torch.testing.assert_close(logits[real], expected[real], atol=1e-4, rtol=0)


def test_positions_and_mask_of_a_left_padded_batch():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert default_position_ids(mask, 2, 2, 3, torch.device("cpu")).tolist() == [[1, 2], [3, 4]]
    allowed = build_attention_mask(mask, query_len=5, past_len=0)
    assert allowed.shape == (2, 1, 5, 5) and allowed.any(dim=-1).all()  # no empty row
    assert not allowed[0, 0, 2:, :2].any()  # real tokens never see padding
    assert build_attention_mask(torch.ones(2, 5), query_len=1, past_len=4) is None


def incremental_logits(decoder, ids, mask, chunks) -> torch.Tensor:
    """Logits of a forward fed in ``chunks`` (lengths) through the KV cache, concatenated."""
    cache, pieces, start = None, [], 0
    for size in chunks:
        end = start + size
        out = decoder(
            decoder.embed(ids[:, start:end]),
            attention_mask=mask[:, :end],
            past_key_values=cache,
            use_cache=True,
        )
        cache, start = out.past_key_values, end
        pieces.append(out.logits)
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize("attention", ["mha", "mla"])
def test_kv_cache_decoding_equals_full_forward(attention):
    mla = TINY_MLA if attention == "mla" else None
    decoder = DeepseekMoEDecoder(**TINY, attention=attention, mla=mla).eval()
    randomize(decoder)
    ids, mask = left_padded()
    with torch.no_grad():
        full = decoder(decoder.embed(ids), attention_mask=mask).logits
        stepwise = incremental_logits(decoder, ids, mask, [6, 1, 1, 1, 1])
        chunked = incremental_logits(decoder, ids, mask, [4, 3, 3])
    real = mask.bool()
    torch.testing.assert_close(stepwise[real], full[real], atol=1e-4, rtol=0)
    torch.testing.assert_close(chunked[real], full[real], atol=1e-4, rtol=0)


def test_mla_matches_transformers_deepseek_v2():
    """MLA (with and without the low-rank query) against transformers' DeepSeek-V2."""
    for q_lora_rank in (None, 24):
        config = DeepseekV2Config(
            **TINY,
            **TINY_MLA,
            q_lora_rank=q_lora_rank,
            first_k_dense_replace=1,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        )
        reference = DeepseekV2ForCausalLM(config).eval()
        randomize(reference)
        decoder = DeepseekMoEDecoder(
            **TINY, attention="mla", mla={**TINY_MLA, "q_lora_rank": q_lora_rank}
        ).eval()
        decoder.load_state_dict(transformers_to_zoo(reference.state_dict(), prefix="model."))
        ids, _ = left_padded()
        with torch.no_grad():
            expected = reference(ids).logits
            logits = decoder(decoder.embed(ids)).logits
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


def test_converters_round_trip_exactly():
    decoder = DeepseekMoEDecoder(**TINY)
    state = decoder.state_dict()
    for to_layout, from_layout in (
        (zoo_to_official, official_to_zoo),
        (zoo_to_transformers, transformers_to_zoo),
    ):
        back = from_layout(to_layout(state))
        assert back.keys() == state.keys()
        for key, tensor in state.items():
            assert torch.equal(back[key], tensor), key
    reference = transformers_ocr2()
    decoder_keys = {
        k: v for k, v in reference.state_dict().items() if k.startswith(("model.language", "lm_"))
    }
    exported = zoo_to_transformers(zoo_copy(reference).state_dict())
    assert exported.keys() == decoder_keys.keys()
    assert all(torch.equal(exported[k], v) for k, v in decoder_keys.items())


def test_official_experts_are_stacked_gate_first():
    state = zoo_to_official(DeepseekMoEDecoder(**TINY).state_dict())
    stacked = official_to_zoo(state)["layers.1.mlp.experts.w_gate_up"]
    gate = state["model.layers.1.mlp.experts.5.gate_proj.weight"]
    up = state["model.layers.1.mlp.experts.5.up_proj.weight"]
    assert torch.equal(stacked[5], torch.cat((gate, up)).T)
    del state["model.layers.2.mlp.experts.3.up_proj.weight"]
    with pytest.raises(KeyError, match=r"layer 2 lacks expert weights: experts\.3\.up_proj"):
        official_to_zoo(state)
    with pytest.raises(KeyError, match="model.layers.0.mlp.bogus.weight"):
        official_to_zoo({"model.layers.0.mlp.bogus.weight": torch.zeros(1)})


# --- full size, meta device ---------------------------------------------------------------------

H, V, LAYERS, I_DENSE, EXPERTS, I_EXPERT, TOP_K, SHARED_EXPERTS = (
    1280,
    129280,
    12,
    6848,
    64,
    896,
    6,
    2,
)


def official_shape(key: str) -> tuple[int, ...]:
    """Shape of a released decoder tensor, from the published architecture alone."""
    rules = [
        (r"model\.embed_tokens\.weight|lm_head\.weight", (V, H)),
        (r".*(norm|layernorm)\.weight", (H,)),
        (r".*self_attn\.[qkvo]_proj\.weight", (H, H)),
        (r".*experts\.\d+\.(gate|up)_proj\.weight", (I_EXPERT, H)),
        (r".*experts\.\d+\.down_proj\.weight", (H, I_EXPERT)),
        (r".*shared_experts\.(gate|up)_proj\.weight", (SHARED_EXPERTS * I_EXPERT, H)),
        (r".*shared_experts\.down_proj\.weight", (H, SHARED_EXPERTS * I_EXPERT)),
        (r".*mlp\.gate\.weight", (EXPERTS, H)),
        (r".*mlp\.(gate|up)_proj\.weight", (I_DENSE, H)),
        (r".*mlp\.down_proj\.weight", (H, I_DENSE)),
    ]
    return next(shape for pattern, shape in rules if re.fullmatch(pattern, key))


def full_size_meta_decoder() -> DeepseekMoEDecoder:
    with torch.device("meta"):
        return DeepseekMoEDecoder()


def test_full_size_parameter_counts():
    total, active = count_parameters(full_size_meta_decoder())
    expert = 3 * H * I_EXPERT
    moe_layer = EXPERTS * expert + EXPERTS * H + 3 * H * SHARED_EXPERTS * I_EXPERT
    per_layer = 4 * H * H + 2 * H
    expected_total = 2 * V * H + LAYERS * per_layer + H + 3 * H * I_DENSE + (LAYERS - 1) * moe_layer
    expected_active = expected_total - V * H - (LAYERS - 1) * (EXPERTS - TOP_K) * expert
    assert (total, active) == (expected_total, expected_active)
    # "DeepSeek3B-MoE-A570M": ~2.9B in the decoder (the released 3.39B includes the encoder).
    assert 2.9e9 < total < 3.0e9
    assert 0.55e9 < active < 0.60e9


def shared_file(name: str) -> Path:
    path = SHARED / "checkpoints" / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared data folder is not mounted)")
    return path


def test_released_index_converts_onto_full_size_decoder():
    index = shared_file("deepseek_ocr2.safetensors.index.json")
    names = json.loads(index.read_text())["weight_map"]
    decoder_names = {
        n
        for n in names
        if n.startswith(("model.embed_tokens", "model.layers.", "model.norm", "lm_"))
    }
    decoder = full_size_meta_decoder()
    expected = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    released = {n: torch.empty(official_shape(n), device="meta") for n in decoder_names}
    converted = official_to_zoo(released)
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    assert zoo_to_official(decoder.state_dict()).keys() == decoder_names
    # Whole-model dicts: the vision keys are left to the encoder converters.
    assert (
        official_to_zoo({n: torch.empty(0, device="meta") for n in names if n not in released})
        == {}
    )


def test_official_language_config_gives_the_default_decoder():
    config = json.loads(shared_file("deepseek_ocr2.config.json").read_text())
    kwargs = official_config_to_kwargs(config["language_config"])
    with torch.device("meta"):
        built = DeepseekMoEDecoder(**kwargs)
    assert count_parameters(built) == count_parameters(full_size_meta_decoder())
    assert "attention" not in kwargs


# --- MoE parts ----------------------------------------------------------------------------------


def test_router_matches_transformers_group_limited_router():
    from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2TextTopkRouter

    reference = transformers_ocr2(**ROUTERS[1]).model.language_model.layers[1].mlp.gate
    assert isinstance(reference, DeepseekOcr2TextTopkRouter)
    router = TopKRouter(64, 8, 3, "group_limited_greedy", 4, 2, routed_scaling_factor=1.5)
    router.weight.data.copy_(reference.weight)
    hidden = torch.randn(50, 64)
    _, ref_weights, ref_ids = reference(hidden)
    routing = router(hidden)
    ref_order, order = ref_ids.argsort(-1), routing.expert_ids.argsort(-1)
    assert torch.equal(routing.expert_ids.gather(-1, order), ref_ids.gather(-1, ref_order))
    torch.testing.assert_close(routing.weights.gather(-1, order), ref_weights.gather(-1, ref_order))
    groups = routing.expert_ids // 2
    assert all(len(set(row.tolist())) <= 2 for row in groups)


def test_norm_topk_prob_renormalises_chosen_weights():
    router = TopKRouter(16, 8, 3, norm_topk_prob=True, routed_scaling_factor=7.0)
    weights = router(torch.randn(20, 16)).weights
    torch.testing.assert_close(weights.sum(-1), torch.ones(20))


def test_experts_equal_a_per_expert_loop_and_the_padded_fallback():
    experts = RoutedExperts(8, 16, 12)
    hidden = torch.randn(40, 16)
    expert_ids = torch.rand(40, 8).topk(3, dim=-1).indices
    weights = torch.rand(40, 3)
    expected = torch.zeros(40, 16)
    for token in range(40):
        for slot in range(3):
            e = int(expert_ids[token, slot])
            gate, up = (hidden[token] @ experts.w_gate_up[e]).chunk(2)
            out = (torch.nn.functional.silu(gate) * up) @ experts.w_down[e]
            expected[token] += weights[token, slot] * out
    with torch.no_grad():
        torch.testing.assert_close(experts(hidden, expert_ids, weights), expected)
    x, counts = torch.randn(10, 16), torch.tensor([3, 0, 7])
    for width in (8, 5):  # 5 floats is not 16-byte aligned: the padded fallback runs
        weight = torch.randn(3, 16, width)
        expected = torch.cat([x[:3] @ weight[0], x[3:] @ weight[2]])
        torch.testing.assert_close(grouped_matmul(x, weight, counts), expected)
        torch.testing.assert_close(padded_grouped_matmul(x, weight, counts), expected)
    assert grouped_mm_supported(x, torch.randn(3, 16, 8))
    assert not grouped_mm_supported(x, torch.randn(3, 16, 5))


def test_decoder_trains_through_grouped_experts():
    decoder = DeepseekMoEDecoder(**TINY).train()
    ids = torch.randint(0, 97, (2, 7))
    out = decoder(decoder.embed(ids))
    loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), ids.flatten()) + out.aux_loss
    loss.backward()
    experts = decoder.layers[1].mlp.experts
    assert experts.w_gate_up.grad.abs().sum() > 0 and experts.w_down.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in decoder.parameters() if p.grad is not None)


# --- the column-major LM head ------------------------------------------------------------------


def column_major(weight: torch.Tensor) -> bool:
    return weight.t().is_contiguous() and not weight.is_contiguous()


def test_lm_head_is_column_major_and_computes_what_a_linear_does():
    head = DeepseekMoEDecoder(**TINY).lm_head
    assert tuple(head.weight.shape) == (97, 64) and column_major(head.weight)
    hidden = torch.randn(3, 64)
    torch.testing.assert_close(head(hidden), hidden @ head.weight.detach().contiguous().t())


def test_lm_head_keeps_its_layout_through_loading_casting_and_training():
    decoder = DeepseekMoEDecoder(**TINY)
    state = {k: v.contiguous() for k, v in DeepseekMoEDecoder(**TINY).state_dict().items()}
    for assign in (False, True):
        decoder.load_state_dict(state, assign=assign)
        assert column_major(decoder.lm_head.weight)
        torch.testing.assert_close(decoder.lm_head.weight, state["lm_head.weight"])
    assert column_major(decoder.to(torch.bfloat16).lm_head.weight)
    decoder.float()
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-2)
    decoder(decoder.embed(torch.randint(0, 97, (2, 5)))).logits.sum().backward()
    before = decoder.lm_head.weight.detach().clone()
    optimizer.step()
    assert column_major(decoder.lm_head.weight)
    assert not torch.equal(before, decoder.lm_head.weight)


def test_a_tied_lm_head_is_the_embedding_table():
    decoder = tiny_dense()
    assert decoder.lm_head.weight is decoder.embed_tokens.weight


# --- auxiliary balance loss --------------------------------------------------------------------


def test_balance_loss_is_one_for_uniform_scores_and_larger_when_collapsed():
    uniform = torch.full((2, 10, 8), 1 / 8)
    any_choice = torch.randint(0, 8, (2, 10, 3))
    assert expert_balance_loss(uniform, any_choice).item() == pytest.approx(1.0)
    collapsed_scores = torch.zeros(2, 10, 8)
    collapsed_scores[..., :3] = 1 / 3
    collapsed_ids = torch.arange(3).expand(2, 10, 3)
    for level in ("sequence", "batch"):
        assert expert_balance_loss(collapsed_scores, collapsed_ids, level=level).item() == (
            pytest.approx(8 / 3)
        )


def test_aux_loss_positive_differentiable_and_minimal_for_uniform_routing():
    torch.manual_seed(0)
    moe = MoEFeedForward(16, 8, 12, 3, 1, aux_loss_alpha=0.01).train()
    hidden = torch.randn(2, 9, 16)
    _, aux = moe(hidden)
    assert aux.item() > 0.01  # above the uniform minimum alpha * 1
    aux.backward()
    assert moe.router.weight.grad.abs().sum() > 0
    with torch.no_grad():
        moe.router.weight.zero_()
    assert moe(hidden)[1].item() == pytest.approx(0.01)
    assert moe.eval()(hidden)[1] is None


def test_aux_loss_sums_moe_layers_and_ignores_padding():
    decoder = DeepseekMoEDecoder(**TINY, aux_loss_alpha=0.1).train()
    randomize(decoder)
    ids, mask = left_padded()
    with torch.no_grad():
        # Row 2 has 6 padding tokens then 4 real ones: the same balance loss as those 4 alone.
        padded_row = decoder(decoder.embed(ids[2:]), attention_mask=mask[2:]).aux_loss
        alone = decoder(decoder.embed(ids[2:, 6:])).aux_loss
        unmasked = decoder(decoder.embed(ids[2:])).aux_loss
        layers = [layer.mlp for layer in decoder.layers[1:]]
        decoder.layers[2].mlp.aux_loss_alpha = 0.0
        one_layer = decoder(decoder.embed(ids[2:, 6:])).aux_loss
        for mlp in layers:
            mlp.aux_loss_level = "batch"
            mlp.aux_loss_alpha = 0.1
        batch_level = decoder(decoder.embed(ids[2:, 6:])).aux_loss
    torch.testing.assert_close(padded_row, alone)
    assert unmasked.item() != pytest.approx(alone.item())
    assert 0 < one_layer.item() < alone.item()
    torch.testing.assert_close(batch_level, alone)  # one sequence: both levels agree


# --- the rest of the family ---------------------------------------------------------------------


def test_registry_builds_both_decoders_and_names_bad_choices():
    assert isinstance(create_decoder("deepseek_moe", **TINY), DeepseekMoEDecoder)
    dense = create_decoder("dense_lm", vocab_size=50, hidden_size=32, num_hidden_layers=2)
    assert isinstance(dense, DenseDecoder)
    assert dense.lm_head.weight is dense.embed_tokens.weight
    with pytest.raises(ValueError, match="unknown attention 'gqa'; valid: mha, mla"):
        DeepseekMoEDecoder(**TINY, attention="gqa")
    with pytest.raises(ValueError, match="unknown topk_method 'best'"):
        DeepseekMoEDecoder(**TINY, topk_method="best")
    with pytest.raises(ValueError, match="expected"):
        dense(dense.embed(torch.zeros(1, 3, dtype=torch.long)), attention_mask=torch.ones(1, 4))


@pytest.mark.parametrize("attention", ["mha", "mla"])
def test_dense_decoder_caches_like_its_full_forward(attention):
    mla = {**TINY_MLA, "q_lora_rank": 16} if attention == "mla" else None
    decoder = tiny_dense(attention, mla)
    ids, mask = left_padded()
    with torch.no_grad():
        full = decoder(decoder.embed(ids), attention_mask=mask)
        stepwise = incremental_logits(decoder, ids, mask, [5, 1, 1, 1, 1, 1])
    assert full.aux_loss is None
    torch.testing.assert_close(stepwise[mask.bool()], full.logits[mask.bool()], atol=1e-4, rtol=0)
    total, active = count_parameters(decoder)
    assert total == active  # tied embedding is the LM head; no experts


def test_kv_cache_grows_without_losing_positions():
    cache = KVCache(num_layers=1)
    pieces = [torch.randn(2, 3, n, 4) for n in (5, 1, 7, 1)]
    for piece in pieces:
        (keys,) = cache.layer(0).append(piece)
    assert cache.seq_len == 14
    torch.testing.assert_close(keys, torch.cat(pieces, dim=2))
    with pytest.raises(ValueError, match="cannot append"):
        cache.append(0, torch.randn(1, 3, 1, 4))


@pytest.mark.parametrize("shape", [(3, 4), ()], ids=["heads", "latent"])
def test_kv_cache_merges_row_groups_left_padded(shape):
    layers = 2
    groups = {(0, 2): 5, (1,): 3}  # rows of the batch -> their cached length
    parts, sources = [], {}
    for rows, length in groups.items():
        cache = KVCache(num_layers=layers)
        for layer in range(layers):
            tensor = torch.randn(len(rows), *shape[:1], length, *shape[1:] or (6,))
            cache.append(layer, tensor, tensor + 1)
            sources[rows, layer] = tensor
        parts.append((cache, torch.tensor(rows)))
    merged = KVCache.left_padded(parts, batch=3)
    assert merged.seq_len == 5
    for (rows, length), layer in [(g, i) for g in groups.items() for i in range(layers)]:
        keys, values = merged._buffers[layer]
        for position, row in enumerate(rows):
            torch.testing.assert_close(
                keys[row, ..., 5 - length :, :], sources[rows, layer][position]
            )
            torch.testing.assert_close(
                values[row, ..., 5 - length :, :], keys[row, ..., 5 - length :, :] + 1
            )
            assert (keys[row, ..., : 5 - length, :] == 0).all()
    with pytest.raises(ValueError, match="numbers of layers"):
        KVCache.left_padded([parts[0], (KVCache(num_layers=1), torch.tensor([1]))], batch=3)

"""Mask specs, their algebra (union, intersection, packing, padding) and compilation to each
backend; the causal-flow mask inside the v2 encoder."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention.flex_attention import BlockMask

from masks import (
    ATTENTION_BACKENDS,
    TableSpec,
    Visibility,
    additive_mask,
    block_mask,
    compile_mask,
    dense_mask,
    pack,
    stack,
    xformers_bias,
)
from masks.builtin import QUERY, VISUAL
from tests.test_causal_flow import tiny_encoder
from zoo.registry import MASKS, create_mask


def causal_flow_reference(m: int, n: int) -> torch.Tensor:
    """The v2 paper's M = [[1_mxm, 0_mxn], [1_nxm, LowerTri(n)]]."""
    top = torch.cat([torch.ones(m, m), torch.zeros(m, n)], dim=1)
    bottom = torch.cat([torch.ones(n, m), torch.ones(n, n).tril()], dim=1)
    return torch.cat([top, bottom]).bool()


@pytest.mark.parametrize("m,n", [(1, 1), (3, 4), (5, 2), (16, 16)])
def test_causal_flow_is_the_documented_pattern(m, n):
    mask = dense_mask(create_mask("causal_flow"), [("visual", m), ("query", n)])
    assert torch.equal(mask, causal_flow_reference(m, n))


def test_causal_flow_for_two_visual_and_three_query_tokens_spelled_out():
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
        ]
    ).bool()
    assert torch.equal(
        dense_mask(create_mask("causal_flow"), [("visual", 2), ("query", 3)]), expected
    )


def test_bidirectional_and_causal_ignore_the_segments():
    layout = [("visual", 3), ("query", 2)]
    assert dense_mask(create_mask("bidirectional"), layout).all()
    assert torch.equal(dense_mask(create_mask("causal"), layout), torch.ones(5, 5).tril().bool())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_additive_mask_is_zero_where_allowed_and_the_dtype_minimum_elsewhere(dtype):
    spec, layout = create_mask("causal_flow"), [("visual", 2), ("query", 3)]
    additive = additive_mask(spec, layout, dtype)
    allowed = dense_mask(spec, layout)
    assert additive.dtype == dtype and additive.shape == (5, 5)
    assert (additive[allowed] == 0).all()
    assert (additive[~allowed] == torch.finfo(dtype).min).all()


def test_compiled_masks_are_cached_per_shape():
    spec = create_mask("causal_flow")
    first = dense_mask(spec, [("visual", 4), ("query", 4)])
    assert dense_mask(spec, (("visual", 4), ("query", 4))) is first
    assert dense_mask(spec, [("visual", 4), ("query", 5)]) is not first


def test_a_segment_the_spec_does_not_know_is_an_error():
    with pytest.raises(ValueError, match=r"no rule for segment pair \('visual', 'text'\)"):
        dense_mask(create_mask("causal_flow"), [("visual", 2), ("text", 2)])


def test_a_segment_that_sees_nothing_is_an_error():
    spec = TableSpec.from_table("blind", {("a", "a"): "all"}, default=Visibility.NONE)
    with pytest.raises(ValueError, match=r"segment\(s\) \['b'\] with nothing to attend to"):
        dense_mask(spec, [("a", 2), ("b", 2)])
    with pytest.raises(ValueError, match="nothing to attend to"):  # in any view of a batch
        block_mask(spec, stack([("a", 2)], pack([("a", 1)], [("a", 1), ("b", 1)])))


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError, match=r"lengths must be >= 0"):
        dense_mask(create_mask("causal"), [("a", -1)])


def run_encoder_layers(mask_name: str, sequence: torch.Tensor, visual: int) -> torch.Tensor:
    """The tiny v2 encoder's transformer over ``sequence`` under the named mask."""
    encoder = tiny_encoder()
    layout = [("visual", visual), ("query", sequence.shape[1] - visual)]
    mask = additive_mask(create_mask(mask_name), layout, sequence.dtype)
    with torch.no_grad():
        return encoder.lm(sequence, mask)


def test_perturbing_a_query_never_changes_visual_tokens_or_earlier_queries():
    torch.manual_seed(0)
    visual, queries, changed = 6, 5, 2
    sequence = torch.randn(2, visual + queries, 32)
    perturbed = sequence.clone()
    perturbed[:, visual + changed] += torch.randn(2, 32)
    before = run_encoder_layers("causal_flow", sequence, visual)
    after = run_encoder_layers("causal_flow", perturbed, visual)
    unaffected = visual + changed
    torch.testing.assert_close(after[:, :unaffected], before[:, :unaffected], rtol=0, atol=1e-6)
    moved = (after[:, unaffected:] - before[:, unaffected:]).abs().amax(dim=(0, 2))
    assert (moved > 1e-3).all()  # the perturbed query and every later one change

    # Under a bidirectional mask the same perturbation reaches the visual tokens.
    before = run_encoder_layers("bidirectional", sequence, visual)
    after = run_encoder_layers("bidirectional", perturbed, visual)
    assert (after[:, :visual] - before[:, :visual]).abs().amax() > 1e-3


def blocks(m: int, n: int, vv, vq, qv, qq) -> torch.Tensor:
    """The ``[[vv, vq], [qv, qq]]`` block matrix over m visual tokens and n queries."""
    return torch.cat(
        [torch.cat([vv(m, m), vq(m, n)], dim=1), torch.cat([qv(n, m), qq(n, n)], dim=1)]
    ).bool()


ONES, ZEROS = torch.ones, torch.zeros


def lower(rows: int, cols: int) -> torch.Tensor:
    return torch.ones(rows, cols).tril()


# Each variant of the 2 x 2 block pattern, spelled out (v2 paper notation for causal_flow).
VARIANTS = {
    "causal_flow": lambda m, n: blocks(m, n, ONES, ZEROS, ONES, lower),
    "bidirectional_queries": lambda m, n: blocks(m, n, ONES, ZEROS, ONES, ONES),
    "visual_only_queries": lambda m, n: blocks(m, n, ONES, ZEROS, ONES, ZEROS),
    "leaky_causal_flow": lambda m, n: blocks(m, n, ONES, ONES, ONES, lower),
    "causal": lambda m, n: torch.ones(m + n, m + n).tril().bool(),
    "bidirectional": lambda m, n: torch.ones(m + n, m + n).bool(),
    "windowed_queries": lambda m, n: blocks(
        m, n, ONES, ZEROS, ONES, lambda r, c: lower(r, c) - torch.ones(r, c).tril(-12)
    ),
}


def test_every_registered_mask_has_a_spelled_out_pattern():
    assert set(MASKS.names()) == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("m,n", [(3, 4), (2, 15)])
def test_each_variant_has_its_documented_pattern(name, m, n):
    assert torch.equal(
        dense_mask(create_mask(name), [("visual", m), ("query", n)]), VARIANTS[name](m, n)
    )


def test_a_sliding_window_counts_the_attending_query():
    mask = dense_mask(create_mask("windowed_queries", window=2), [("visual", 1), ("query", 4)])
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [1, 0, 0, 1, 1]]
    ).bool()
    assert torch.equal(mask, expected)
    with pytest.raises(ValueError, match=r"needs window >= 1, got window=0"):
        create_mask("windowed_queries", window=0)


def test_union_and_intersection_combine_cell_by_cell():
    layout = [("visual", 3), ("query", 4)]
    flow, leaky, causal = (create_mask(n) for n in ("causal_flow", "leaky_causal_flow", "causal"))
    union, both = flow | causal, flow & causal
    assert torch.equal(
        dense_mask(union, layout), dense_mask(flow, layout) | dense_mask(causal, layout)
    )
    assert torch.equal(
        dense_mask(both, layout), dense_mask(flow, layout) & dense_mask(causal, layout)
    )
    assert torch.equal(dense_mask(flow | leaky, layout), dense_mask(leaky, layout))
    assert (union.name, both.name) == ("(causal_flow | causal)", "(causal_flow & causal)")
    assert hash(flow & causal) == hash(both)  # combined specs are cache keys too


def test_packing_is_block_diagonal_and_padding_is_inert():
    spec = create_mask("causal_flow")
    crop, page = [("visual", 2), ("query", 3)], [("visual", 4), ("query", 1)]
    packed = dense_mask(spec, pack(crop, page))
    assert torch.equal(packed, torch.block_diag(dense_mask(spec, crop), dense_mask(spec, page)))

    batch = dense_mask(spec, stack(pack(crop, page), crop))  # row 2 is 5 tokens, padded to 10
    assert batch.shape == (2, 1, 10, 10)
    assert torch.equal(batch[0, 0], packed)
    assert torch.equal(batch[1, 0, :5, :5], dense_mask(spec, crop))
    assert not batch[1, 0, :5, 5:].any()  # no real token sees padding
    assert torch.equal(batch[1, 0, 5:], torch.eye(10).bool()[5:])  # padding sees only itself


def test_token_tables_give_labels_views_and_positions_within_views():
    layout = stack(pack([("visual", 2), ("query", 1)], [("visual", 1)]), [("query", 2)])
    label, view, position = layout.tokens()
    assert layout.labels == ("visual", "query") and layout.lengths == (4, 2)
    assert label.tolist() == [[0, 0, 1, 0], [1, 1, 0, 0]]
    assert view.tolist() == [[0, 0, 0, 1], [0, 0, -1, -1]]
    assert position.tolist() == [[0, 1, 2, 0], [0, 1, 0, 0]]


def test_each_backend_gets_its_mask_form():
    spec, layout = create_mask("causal_flow"), [("visual", 3), ("query", 4)]
    for backend in ("sdpa", "eager"):
        assert torch.equal(compile_mask(spec, layout, backend), additive_mask(spec, layout))
    flex = compile_mask(spec, layout, "flex")
    assert isinstance(flex, BlockMask) and flex.shape[-2:] == (7, 7)
    assert flex is block_mask(spec, [("visual", 3), ("query", 4)])  # cached
    with pytest.raises(ValueError, match=r"unknown attention backend 'cuda'; valid: \['sdpa'"):
        compile_mask(spec, layout, "cuda")
    assert ATTENTION_BACKENDS == ("sdpa", "eager", "flex", "xformers")


def test_xformers_bias_rows_are_8_aligned_and_equal_the_additive_mask():
    spec, layout = create_mask("causal_flow"), [("visual", 3), ("query", 4)]
    bias = xformers_bias(spec, layout)
    assert bias.shape == (1, 1, 7, 7) and bias.stride(-2) % 8 == 0
    assert torch.equal(bias[0, 0], additive_mask(spec, layout))


def test_the_flex_block_mask_is_built_without_a_dense_mask():
    from zoo.bench.measure import peak_tensor_bytes

    visual = 2048
    layout = [(VISUAL, visual), (QUERY, visual)]
    spec = create_mask("causal_flow")
    peak = peak_tensor_bytes(lambda: block_mask(spec, layout))
    dense_bool_bytes = (2 * visual) ** 2
    assert peak < dense_bool_bytes / 4
    blocks = block_mask(spec, layout).to_dense()  # [1, 1, q blocks, kv blocks]
    assert blocks[0, 0, :16, :16].all() and not blocks[0, 0, :16, 16:].any()  # visual rows
    assert blocks[0, 0, 16:, :16].all() and not blocks[0, 0, 16, 17:].any()  # queries: causal


def test_masks_first_built_in_inference_mode_stay_normal_tensors_for_training():
    """A validation before training compiles, under inference mode, the masks that training
    then takes from the cache; inference tensors there could not be saved for backward."""
    spec = create_mask("causal_flow")
    # shapes no other test compiles, so this test builds them first
    layout = stack([("visual", 37), ("query", 29)], [("visual", 31), ("query", 29)])
    with torch.inference_mode():
        built = [
            dense_mask(spec, layout),
            additive_mask(spec, layout),
            xformers_bias(spec, layout, torch.float32),
            block_mask(spec, layout).kv_num_blocks,
        ]
    assert not any(tensor.is_inference() for tensor in built)
    scores = torch.zeros(2, 1, 66, 66, requires_grad=True)
    scores.masked_fill(~dense_mask(spec, layout), -1e4).softmax(-1).sum().backward()

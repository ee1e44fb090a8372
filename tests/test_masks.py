"""Mask specs and their dense compilation; the causal-flow mask inside the v2 encoder."""

from __future__ import annotations

import pytest
import torch

from masks import MaskSpec, Visibility, additive_mask, dense_mask
from tests.test_causal_flow import tiny_encoder
from zoo.registry import create_mask


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
    spec = MaskSpec.from_table("blind", {("a", "a"): "all"}, default=Visibility.NONE)
    with pytest.raises(ValueError, match=r"segment\(s\) \['b'\] with nothing to attend to"):
        dense_mask(spec, [("a", 2), ("b", 2)])


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

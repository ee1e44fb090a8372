"""The attention core (``zoo.layers.attention``): every backend against attention written out
in float64, for grouped-query and multi-head attention, with and without masks; the module
built on it; and the layer library's place at the bottom of the import graph."""

from __future__ import annotations

import pytest
import torch

from decoders.attention import MultiHeadAttention, build_attention_mask
from decoders.kv_cache import KVCache
from masks import compile_mask, dense_mask, stack
from tests.test_architecture import MODULES, imported_modules
from zoo.layers.attention import (
    ATTENTION_BACKENDS,
    ATTENTION_KERNELS,
    GroupedQueryAttention,
    check_attention_backend,
    eager_attention_with_probs,
    merge_heads,
    repeat_kv,
    split_heads,
    split_qkv,
    xformers_available,
)
from zoo.layers.rotary import RotaryEmbedding, apply_rotary
from zoo.registry import create_mask

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

BACKENDS = [
    pytest.param(
        backend,
        marks=pytest.mark.skipif(
            backend == "xformers" and not xformers_available(),
            reason="xformers needs the package and a CUDA device",
        ),
    )
    for backend in ATTENTION_BACKENDS
]
HEAD_DIM = 8
# (query heads, key/value heads): grouped-query and plain multi-head
HEAD_LAYOUTS = [(4, 2), (4, 4)]
# two rows of different views and segments, the second padded: a mask that is neither full
# nor causal, with padding rows
LAYOUT = stack((("visual", 5), ("query", 3)), (("visual", 3), ("query", 2)))


def reference_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor | None
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + mask) v`` in float64 with every key head repeated for its
    query group; ``allowed`` is a boolean mask (True = may attend)."""
    groups = query.shape[1] // key.shape[1]
    key = key.double().repeat_interleave(groups, 1)
    value = value.double().repeat_interleave(groups, 1)
    scores = query.double() @ key.transpose(-1, -2) / query.shape[-1] ** 0.5
    if allowed is not None:
        scores = scores + torch.zeros_like(scores).masked_fill(~allowed, float("-inf"))
    return (scores.softmax(-1) @ value).to(query.dtype)


def random_heads(
    batch: int, heads: int, kv_heads: int, length: int, keys: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    keys = length if keys is None else keys
    query = torch.randn(batch, heads, length, HEAD_DIM, generator=generator)
    key = torch.randn(batch, kv_heads, keys, HEAD_DIM, generator=generator)
    value = torch.randn(batch, kv_heads, keys, HEAD_DIM, generator=generator)
    return query, key, value


@pytest.mark.parametrize("heads, kv_heads", HEAD_LAYOUTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_equals_the_written_out_attention_under_a_mask(backend, heads, kv_heads):
    device = "cuda" if backend == "xformers" else "cpu"
    query, key, value = (
        t.to(device) for t in random_heads(LAYOUT.batch_size, heads, kv_heads, LAYOUT.length)
    )
    spec = create_mask("causal_flow")
    mask = compile_mask(spec, LAYOUT, backend, query.dtype, query.device)
    allowed = dense_mask(spec, LAYOUT, query.device)
    with torch.no_grad():  # flex has no CPU backward
        out = ATTENTION_KERNELS[backend](query, key, value, mask)
    expected = reference_attention(query, key, value, allowed)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("heads, kv_heads", HEAD_LAYOUTS)
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_dense_backends_take_boolean_masks_and_none_and_other_key_lengths(backend, heads, kv_heads):
    """The dense kernels read a boolean mask as an additive one, ``None`` as no mask, and
    keys longer than the queries (a cache's past, a cross-attention memory)."""
    query, key, value = random_heads(2, heads, kv_heads, length=3, keys=7)
    allowed = torch.rand(2, 1, 3, 7, generator=torch.Generator().manual_seed(1)) > 0.4
    allowed[..., 0] = True  # no row masked out entirely
    kernel = ATTENTION_KERNELS[backend]
    for mask in (allowed, None):
        expected = reference_attention(query, key, value, mask)
        torch.testing.assert_close(kernel(query, key, value, mask), expected, rtol=1e-5, atol=1e-5)


def test_eager_probabilities_are_the_softmax_of_the_masked_scores():
    query, key, value = random_heads(1, 4, 2, length=5)
    allowed = torch.ones(5, 5, dtype=torch.bool).tril()
    out, probs = eager_attention_with_probs(query, key, value, allowed)
    assert probs.shape == (1, 4, 5, 5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 4, 5))
    assert bool((probs.masked_select(~allowed) == 0).all())
    torch.testing.assert_close(out, probs @ repeat_kv(value, 4))


def test_heads_split_and_merge_are_inverse_views_and_fused_projections_split_in_thirds():
    x = torch.randn(2, 5, 4 * HEAD_DIM)
    heads = split_heads(x, 4)
    assert heads.shape == (2, 4, 5, HEAD_DIM)
    assert heads.data_ptr() == x.data_ptr()  # a view: no copy before the kernel
    assert torch.equal(heads[:, 1, :, :], x[..., HEAD_DIM : 2 * HEAD_DIM])
    assert torch.equal(merge_heads(heads), x)
    fused = torch.randn(2, 5, 3 * 4 * HEAD_DIM)
    for part, third in zip(split_qkv(fused, 4), fused.chunk(3, dim=-1), strict=True):
        assert torch.equal(merge_heads(part), third)  # [q; k; v] thirds, each split in heads


@pytest.mark.parametrize("heads, kv_heads", HEAD_LAYOUTS)
@pytest.mark.parametrize("backend", ["sdpa", "eager", "flex"])
def test_module_projects_rotates_and_attends_as_written_out(backend, heads, kv_heads):
    torch.manual_seed(0)
    attention = GroupedQueryAttention(
        heads * HEAD_DIM, heads, kv_heads, qkv_bias=True, backend=backend
    )
    hidden = torch.randn(LAYOUT.batch_size, LAYOUT.length, heads * HEAD_DIM)
    rope = RotaryEmbedding(HEAD_DIM, 1e4)(torch.arange(LAYOUT.length)[None], hidden.dtype)
    spec = create_mask("causal_flow")
    mask = compile_mask(spec, LAYOUT, backend)
    with torch.no_grad():
        out = attention(hidden, rope, mask)
        query = apply_rotary(split_heads(attention.q_proj(hidden), heads), *rope)
        key = apply_rotary(split_heads(attention.k_proj(hidden), kv_heads), *rope)
        value = split_heads(attention.v_proj(hidden), kv_heads)
        attended = reference_attention(query, key, value, dense_mask(spec, LAYOUT))
        expected = attention.o_proj(merge_heads(attended))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert [name for name, _ in attention.named_parameters()] == [
        "q_proj.weight",
        "q_proj.bias",
        "k_proj.weight",
        "k_proj.bias",
        "v_proj.weight",
        "v_proj.bias",
        "o_proj.weight",
    ]


def test_decoder_attention_reads_no_mask_as_causal_and_extends_a_cache():
    """The decoders' multi-head attention is the core with ``build_attention_mask``'s
    convention: ``None`` is causal over several queries; with a cache, later queries read the
    past's keys (a prefill then one step equals one forward over all positions)."""
    torch.manual_seed(0)
    attention = MultiHeadAttention(4 * HEAD_DIM, 4)
    hidden = torch.randn(1, 6, 4 * HEAD_DIM)
    rope = RotaryEmbedding(HEAD_DIM, 1e4)(torch.arange(6)[None], hidden.dtype)
    with torch.no_grad():
        whole = attention(hidden, rope, build_attention_mask(None, 6, 0))
        query = apply_rotary(split_heads(attention.q_proj(hidden), 4), *rope)
        key = apply_rotary(split_heads(attention.k_proj(hidden), 4), *rope)
        value = split_heads(attention.v_proj(hidden), 4)
        causal = torch.ones(6, 6, dtype=torch.bool).tril()
        expected = attention.o_proj(merge_heads(reference_attention(query, key, value, causal)))
        torch.testing.assert_close(whole, expected, rtol=1e-5, atol=1e-5)
        cache = KVCache(1)
        first = attention(hidden[:, :5], tuple(r[:, :5] for r in rope), None, cache.layer(0))
        step = attention(
            hidden[:, 5:],
            tuple(r[:, 5:] for r in rope),
            build_attention_mask(None, 1, 5),
            cache.layer(0),
        )
    torch.testing.assert_close(torch.cat([first, step], 1), whole, rtol=1e-5, atol=1e-5)


def test_unknown_or_unavailable_backends_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown attn_backend 'fast'; valid: \['sdpa'"):
        check_attention_backend("fast")
    with pytest.raises(ValueError, match="num_heads divisible by num_kv_heads"):
        GroupedQueryAttention(24, 3, 2)
    if not xformers_available():
        with pytest.raises(ValueError, match="needs the xformers package"):
            GroupedQueryAttention(32, 4, backend="xformers")


def test_the_layer_library_imports_nothing_of_the_zoo_but_itself():
    layers = {name: path for name, path in MODULES.items() if name.startswith("zoo.layers")}
    assert "zoo.layers.attention" in layers
    for name, path in layers.items():
        outside = {m for m in imported_modules(path) if not m.startswith("zoo.layers")}
        assert outside == set(), f"{name} imports {sorted(outside)}"

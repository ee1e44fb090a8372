"""Encoder-decoder ablation of DeepEncoder V2: queries cross-attend to separately encoded tokens.

DeepSeek-OCR 2 puts visual tokens and queries in one sequence of one LM, under the causal-flow
mask. Its paper reports that the encoder-decoder alternative, which this module builds, fails
to converge: a bidirectional Qwen2-shaped stack encodes the ``m`` visual tokens on its own,
and the ``n`` learnable queries go through a separate decoder stack whose layers attend
causally among the queries, then cross-attend to every encoded visual token (as in
mBART/T5). Only the ``n`` query outputs leave the encoder, as in v2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.nn.attention.flex_attention import BlockMask

from encoders.base import VisionEncoder
from encoders.causal_flow import (
    EncoderLayer,
    MaskedTransformer,
    QuerySets,
    lm_tokenizer,
    query_plan,
)
from masks.backends import compile_mask
from masks.builtin import QUERY, causal
from zoo.layers import GroupedQueryAttention, RMSNorm, Rope, merge_heads
from zoo.registry import register_encoder

CAUSAL = causal()


class CrossAttention(GroupedQueryAttention):
    """Grouped-query attention from a target sequence to a memory sequence, without positions.

    ``forward(hidden [B, n, C], memory [B, m, C]) -> [B, n, C]``: every target token sees every
    memory token. Rotary positions are left out, as in encoder-decoder cross-attention: the
    memory's order is already in its encoded states. Projections as in the self-attention.
    """

    def forward(self, hidden: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        query, key, value = self.project(hidden, memory)
        return self.o_proj(merge_heads(self.attend(query, key, value, None)))


class QueryDecoderLayer(EncoderLayer):
    """The causal-flow layer with a cross-attention branch between its two: causal
    self-attention among queries, cross-attention to the encoded visual tokens, SwiGLU; each a
    pre-norm residual branch."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        intermediate_size: int,
        rms_norm_eps: float,
        attn_backend: str = "sdpa",
    ) -> None:
        super().__init__(
            hidden_size, num_heads, num_kv_heads, intermediate_size, rms_norm_eps, attn_backend
        )
        self.cross_attn_layernorm = RMSNorm(hidden_size, rms_norm_eps)
        self.cross_attn = CrossAttention(
            hidden_size, num_heads, num_kv_heads, qkv_bias=True, backend=attn_backend
        )

    def forward(
        self,
        hidden: torch.Tensor,
        memory: torch.Tensor,
        rope: Rope,
        causal_mask: torch.Tensor | BlockMask,
    ) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), rope, causal_mask)
        hidden = hidden + self.cross_attn(self.cross_attn_layernorm(hidden), memory)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class QueryDecoder(MaskedTransformer):
    """The query stack: ``forward(queries [B, n, C], memory [B, m, C]) -> [B, n, C]`` with the
    final RMSNorm; queries take positions ``0..n-1`` and see themselves and earlier queries.

    A :class:`MaskedTransformer` (same final norm, rotary table, initialisation and names)
    whose layers also cross-attend to ``memory``.
    """

    layer_class = QueryDecoderLayer

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        length = queries.shape[1]
        mask = compile_mask(
            CAUSAL, ((QUERY, length),), self.attn_backend, queries.dtype, queries.device
        )
        rope = self.rotary(torch.arange(length, device=queries.device)[None], queries.dtype)
        hidden = queries
        for layer in self.layers:
            hidden = layer(hidden, memory, rope, mask)
        return self.norm(hidden)


@register_encoder("cross_attention_queries")
class CrossAttentionQueriesEncoder(VisionEncoder):
    """Encoder-decoder DeepEncoder V2 ablation: causal queries cross-attend to encoded SAM tokens.

    ``forward(pixels [B, 3, S, S]) -> [B, n, hidden_size]``. ``tokenizer`` names a registered
    encoder whose tokens are ``hidden_size`` wide (default: the v2 SAM tokenizer); a
    bidirectional Qwen2-shaped stack of ``num_encoder_layers`` (``visual_encoder``) encodes
    them, and a stack of ``num_decoder_layers`` :class:`QueryDecoderLayer` (``query_decoder``)
    runs the learned query set of the view size (``query_sets``: view size -> count; release
    counts ``{768: 144, 1024: 256}``; ``query_ratio`` sizes each set as that multiple of its
    view's visual-token count instead) over them. The set is chosen by the number of visual
    tokens, as in ``causal_flow``.
    """

    def __init__(
        self,
        tokenizer: Mapping[str, Any] | None = None,
        hidden_size: int = 896,
        num_encoder_layers: int = 12,
        num_decoder_layers: int = 12,
        num_heads: int = 14,
        num_kv_heads: int = 2,
        intermediate_size: int = 4864,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 1e6,
        query_sets: Mapping[int | str, int] | None = None,
        query_ratio: float | None = None,
        initializer_range: float = 0.02,
        attn_backend: str = "sdpa",
    ) -> None:
        super().__init__()
        self.tokenizer = lm_tokenizer(tokenizer, hidden_size)
        stack_shape = (num_heads, num_kv_heads, intermediate_size, rms_norm_eps, rope_theta)
        self.visual_encoder = MaskedTransformer(
            hidden_size, num_encoder_layers, *stack_shape, initializer_range, attn_backend
        )
        self.query_decoder = QueryDecoder(
            hidden_size, num_decoder_layers, *stack_shape, initializer_range, attn_backend
        )
        # the query sets and their choice by visual-token count are causal_flow's own
        counts, view_by_visual_tokens = query_plan(self.tokenizer, query_sets, query_ratio)
        self.queries = QuerySets(counts, hidden_size, view_by_visual_tokens=view_by_visual_tokens)
        self.out_dim = hidden_size

    def queries_for(self, num_visual_tokens: int) -> torch.Tensor:
        """The ``[n, hidden]`` query set that reads ``num_visual_tokens`` visual tokens."""
        return self.queries.for_visual_tokens(num_visual_tokens)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        visual = self.tokenizer(pixel_values)
        memory = self.visual_encoder(visual, None)  # no mask: all visual tokens see each other
        queries = self.queries_for(visual.shape[1]).to(visual.dtype)
        return self.query_decoder(queries.expand(visual.shape[0], -1, -1), memory)

    def num_tokens(self, view_size: int) -> int:
        return self.queries_for(self.tokenizer.num_tokens(view_size)).shape[0]

    def roles(self) -> dict[str, str]:
        """``vision_tokenizer``, ``visual_encoder``, ``query_decoder`` and ``queries``."""
        own = {name: name for name in ("visual_encoder", "query_decoder", "queries")}
        return {**super().roles(), "vision_tokenizer": "tokenizer", **own}

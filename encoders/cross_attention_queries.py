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
from torch import nn
from torch.nn.attention.flex_attention import BlockMask

from encoders.attention import ATTENTION_KERNELS, GroupedQueryAttention
from encoders.base import VisionEncoder, create_tokenizer
from encoders.causal_flow import (
    DEFAULT_TOKENIZER,
    EncoderLayer,
    MaskedTransformer,
    QuerySets,
    query_plan,
)
from masks.backends import compile_mask
from masks.builtin import QUERY
from zoo.layers import RMSNorm
from zoo.registry import create_mask, register_encoder


class CrossAttention(GroupedQueryAttention):
    """Grouped-query attention from a target sequence to a memory sequence, without positions.

    ``forward(hidden [B, n, C], memory [B, m, C]) -> [B, n, C]``: every target token sees every
    memory token. Rotary positions are left out, as in encoder-decoder cross-attention: the
    memory's order is already in its encoded states. Projections as in the self-attention.
    """

    def forward(self, hidden: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        batch, length, _ = hidden.shape
        query = self.q_proj(hidden).view(batch, length, self.num_heads, -1).transpose(1, 2)
        key = self.k_proj(memory).view(batch, memory.shape[1], self.num_kv_heads, -1)
        value = self.v_proj(memory).view(batch, memory.shape[1], self.num_kv_heads, -1)
        kernel = ATTENTION_KERNELS[self.backend]
        out = kernel(query, key.transpose(1, 2), value.transpose(1, 2), None)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


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
        self.cross_attn = CrossAttention(hidden_size, num_heads, num_kv_heads, backend=attn_backend)

    def forward(
        self,
        hidden: torch.Tensor,
        memory: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
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

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        num_kv_heads: int,
        intermediate_size: int,
        rms_norm_eps: float,
        rope_theta: float,
        initializer_range: float = 0.02,
        attn_backend: str = "sdpa",
    ) -> None:
        stack_shape = (num_heads, num_kv_heads, intermediate_size, rms_norm_eps)
        super().__init__(hidden_size, 0, *stack_shape, rope_theta, initializer_range, attn_backend)
        self.layers = nn.ModuleList(
            QueryDecoderLayer(hidden_size, *stack_shape, attn_backend) for _ in range(num_layers)
        )
        self.init_linear_layers(initializer_range)
        self.causal = create_mask("causal")

    def init_linear_layers(self, std: float) -> None:
        """Qwen2's initialisation (as the parent's) of the layers built here."""
        for module in self.layers.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        length = queries.shape[1]
        mask = compile_mask(
            self.causal, ((QUERY, length),), self.attn_backend, queries.dtype, queries.device
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
        tokenizer_spec = dict(DEFAULT_TOKENIZER if tokenizer is None else tokenizer)
        self.tokenizer = create_tokenizer(tokenizer_spec)
        if self.tokenizer.out_dim != hidden_size:
            raise ValueError(
                f"tokenizer {tokenizer_spec['name']!r} outputs {self.tokenizer.out_dim}-wide "
                f"tokens but the encoder is {hidden_size} wide; they must be equal"
            )
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

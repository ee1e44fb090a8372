"""DeepEncoder V2 (DeepSeek-OCR 2): learnable queries read the SAM tokens through a Qwen2-shaped LM.

A view's ``m`` visual tokens (SAM tokenizer, 896 channels) are followed by ``n`` learnable
queries and the sequence ``[visual ; queries]`` (positions ``0..m+n-1``) goes through a
Qwen2-0.5B-shaped transformer without token embedding. Under the ``causal_flow`` mask the
visual tokens attend to each other bidirectionally, and each query attends to every visual
token and to the queries before it, so the queries re-read the page in a learned causal
order. Only the ``n`` query outputs (after the final norm) leave the encoder.

The release has one query set per view size: 144 queries for the 768 local crops and 256 for
the 1024 global view. The set is chosen by the number of visual tokens, as the official code
does: the set of view size ``S`` serves inputs with ``tokenizer.num_tokens(S)`` tokens (144
and 256 in the release); any other count is an error. (transformers instead takes the 768 set
for up to 144 tokens and the 1024 set above; the rules agree on every count the release
produces.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from encoders.attention import GroupedQueryAttention
from encoders.base import VisionEncoder, create_tokenizer
from masks.builtin import QUERY, VISUAL
from masks.dense import additive_mask
from zoo.layers import RMSNorm, RotaryEmbedding, SwiGLU
from zoo.registry import create_mask, register_encoder

DEFAULT_TOKENIZER: dict[str, Any] = {"name": "sam_vitb", "downsample_channels": (512, 896)}
DEFAULT_QUERY_SETS: dict[int, int] = {768: 144, 1024: 256}


class EncoderLayer(nn.Module):
    """Qwen2 decoder layer: ``x + attn(norm(x), mask)`` then ``x + swiglu(norm(x))``."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        intermediate_size: int,
        rms_norm_eps: float,
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(hidden_size, rms_norm_eps)
        self.self_attn = GroupedQueryAttention(hidden_size, num_heads, num_kv_heads)
        self.post_attention_layernorm = RMSNorm(hidden_size, rms_norm_eps)
        self.mlp = SwiGLU(hidden_size, intermediate_size)

    def forward(
        self, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor
    ) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), rope, mask)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class MaskedTransformer(nn.Module):
    """A Qwen2 model without token embedding, run over given embeddings under a given mask.

    ``forward(embeds [B, T, C], mask [T, T]) -> [B, T, C]`` with positions ``0..T-1`` and the
    final RMSNorm applied. Module names are Qwen2's (``layers.N.self_attn.q_proj``, ``norm``).
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
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(hidden_size, num_heads, num_kv_heads, intermediate_size, rms_norm_eps)
            for _ in range(num_layers)
        )
        self.norm = RMSNorm(hidden_size, rms_norm_eps)
        self.rotary = RotaryEmbedding(hidden_size // num_heads, rope_theta)
        for module in self.modules():  # Qwen2's initialisation
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=initializer_range)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(embeds.shape[1], device=embeds.device)[None]
        rope = self.rotary(positions, embeds.dtype)
        hidden = embeds
        for layer in self.layers:
            hidden = layer(hidden, rope, mask)
        return self.norm(hidden)


@register_encoder("causal_flow")
class CausalFlowEncoder(VisionEncoder):
    """DeepSeek-OCR 2 DeepEncoder V2: SAM-B tokens read by causal-flow queries through Qwen2-0.5B.

    ``forward(pixels [B, 3, S, S]) -> [B, n, hidden_size]``: the outputs of the ``n`` queries
    of the set for view size ``S``. ``tokenizer`` names a registered encoder (and its keyword
    arguments) whose tokens are ``hidden_size`` wide; ``query_sets`` maps each view size to its
    number of queries (release: ``{768: 144, 1024: 256}``); ``mask`` names a registered mask
    spec over the segments ``visual`` and ``query``.
    """

    def __init__(
        self,
        tokenizer: Mapping[str, Any] | None = None,
        hidden_size: int = 896,
        num_layers: int = 24,
        num_heads: int = 14,
        num_kv_heads: int = 2,
        intermediate_size: int = 4864,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 1e6,
        mask: str = "causal_flow",
        query_sets: Mapping[int | str, int] | None = None,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        tokenizer_spec = dict(DEFAULT_TOKENIZER if tokenizer is None else tokenizer)
        self.tokenizer = create_tokenizer(tokenizer_spec)
        if self.tokenizer.out_dim != hidden_size:
            raise ValueError(
                f"tokenizer {tokenizer_spec['name']!r} outputs {self.tokenizer.out_dim}-wide "
                f"tokens but the encoder is {hidden_size} wide; they must be equal"
            )
        self.mask_spec = create_mask(mask)
        self.lm = MaskedTransformer(
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            intermediate_size,
            rms_norm_eps,
            rope_theta,
            initializer_range,
        )
        sizes = {
            int(view): int(count) for view, count in (query_sets or DEFAULT_QUERY_SETS).items()
        }
        # nn.Embedding's N(0, 1), as the official query tables.
        self.queries = nn.ParameterDict(
            {
                str(view): nn.Parameter(torch.randn(count, hidden_size))
                for view, count in sizes.items()
            }
        )
        self._view_by_visual_tokens: dict[int, int] = {}
        for view in sizes:
            tokens = self.tokenizer.num_tokens(view)
            if tokens in self._view_by_visual_tokens:
                raise ValueError(
                    f"query sets for views {self._view_by_visual_tokens[tokens]} and {view} both "
                    f"serve {tokens} visual tokens; a set is chosen by the token count, so they "
                    "must differ"
                )
            self._view_by_visual_tokens[tokens] = view
        self.out_dim = hidden_size

    def queries_for(self, num_visual_tokens: int) -> torch.Tensor:
        """The ``[n, hidden]`` query set that reads ``num_visual_tokens`` visual tokens."""
        view = self._view_by_visual_tokens.get(num_visual_tokens)
        if view is None:
            served = {v: t for t, v in self._view_by_visual_tokens.items()}
            raise ValueError(
                f"no query set serves {num_visual_tokens} visual tokens; the sets serve (view "
                f"size: visual tokens) {served}; add the view size to query_sets"
            )
        return self.queries[str(view)]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        visual = self.tokenizer(pixel_values)
        batch, num_visual, _ = visual.shape
        queries = self.queries_for(num_visual).to(visual.dtype)
        sequence = torch.cat([visual, queries.expand(batch, -1, -1)], dim=1)
        layout = ((VISUAL, num_visual), (QUERY, queries.shape[0]))
        mask = additive_mask(self.mask_spec, layout, sequence.dtype, sequence.device)
        return self.lm(sequence, mask)[:, num_visual:]

    def num_tokens(self, view_size: int) -> int:
        return self.queries_for(self.tokenizer.num_tokens(view_size)).shape[0]

"""Causal self-attention of the decoders: plain multi-head (the OCR checkpoints) and DeepSeek-V2's
multi-head latent attention (MLA), both on the attention core of ``zoo.layers.attention`` through
SDPA and both appending to a :class:`KVCache`.

For diagnostics, an :data:`AttentionObserver` set on a module (``TransformerDecoder.
observe_attention``) switches it to the eager kernel and is handed its probabilities; the normal
path never materialises them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from decoders.kv_cache import LayerCache
from zoo.layers.attention import (
    GroupedQueryAttention,
    eager_attention_with_probs,
    merge_heads,
    sdpa_attention,
    split_heads,
)
from zoo.layers.linear import ThreadedLinear
from zoo.layers.norms import RMSNorm
from zoo.layers.rotary import Rope, apply_rotary, pairs_to_halves

ATTENTION_KINDS = ("mha", "mla")

# Called with one layer's attention probabilities ``[B, H, T, S]`` during a forward.
AttentionObserver = Callable[[torch.Tensor], None]


def build_attention_mask(
    padding_mask: torch.Tensor | None,
    query_len: int,
    past_len: int,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """Boolean ``[B or 1, 1, T, past + T]`` mask (True = may attend) for SDPA.

    ``padding_mask`` is ``[B, past + T]`` with 1 for real tokens. ``None`` is returned when no
    explicit mask is needed: a causal block without a past (use SDPA's ``is_causal``) or a single
    query without padding. A padding query may always see itself, so no row is fully masked
    whatever an SDPA backend does with such rows (some give NaN, which later layers would read
    back through the padded keys).
    """
    if padding_mask is not None and bool(padding_mask.all()):
        padding_mask = None
    if padding_mask is None and (past_len == 0 or query_len == 1):
        return None
    device = padding_mask.device if padding_mask is not None else device
    query_pos = torch.arange(past_len, past_len + query_len, device=device)[:, None]
    key_pos = torch.arange(past_len + query_len, device=device)[None, :]
    allowed = (key_pos <= query_pos)[None, None]
    if padding_mask is not None:
        allowed = (allowed & padding_mask.bool()[:, None, None, :]) | (key_pos == query_pos)
    return allowed


def causal_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float | None = None,
    observer: AttentionObserver | None = None,
) -> torch.Tensor:
    """The decoders' kernel under a :func:`build_attention_mask` mask (``None``: causal): SDPA,
    or with an ``observer`` the eager kernel, whose probabilities ``[B, H, T, S]`` the observer
    gets (slower and ``T x S`` in memory, so only diagnostics take it)."""
    if observer is None:
        return sdpa_attention(query, key, value, mask, scale, causal=True)
    if mask is None:  # causal: the new queries follow the past keys
        length, keys = query.shape[-2], key.shape[-2]
        mask = torch.ones(length, keys, dtype=torch.bool, device=query.device).tril(keys - length)
    out, probs = eager_attention_with_probs(query, key, value, mask, scale)
    observer(probs)
    return out


class MultiHeadAttention(GroupedQueryAttention):
    """Multi-head attention with rotary positions and no biases, as in DeepSeek-OCR's decoder;
    its masks are :func:`build_attention_mask`'s (``None``: causal)."""

    observer: AttentionObserver | None = None

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int | None = None) -> None:
        super().__init__(hidden_size, num_heads, head_dim=head_dim)
        self.rope_dim = self.head_dim

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        return causal_attention(query, key, value, mask, observer=self.observer)


class MultiHeadLatentAttention(nn.Module):
    """DeepSeek-V2's multi-head latent attention (MLA).

    Keys and values are rebuilt per head from one compressed latent (``kv_lora_rank``) plus one
    rotary key shared by all heads (``qk_rope_head_dim``); only those two are cached. A forward
    without a past expands the latent into per-head keys and values; a forward that extends a
    cache instead folds ``kv_b_proj`` into the queries and output ("weight absorption"), so a
    decode step reads the small latent cache and never re-expands the past. Queries come from
    ``q_proj``, or through a low-rank ``q_a_proj``/``q_b_proj`` pair when ``q_lora_rank`` is set.
    Module names match DeepSeek-V2 checkpoints. Defaults are DeepSeek-V2-Lite's. An
    ``observer`` sees the expanded path only (a forward without a past).
    """

    observer: AttentionObserver | None = None

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        kv_lora_rank: int = 512,
        qk_nope_head_dim: int = 128,
        qk_rope_head_dim: int = 64,
        v_head_dim: int = 128,
        q_lora_rank: int | None = None,
        rms_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.kv_lora_rank = kv_lora_rank
        self.nope_dim = qk_nope_head_dim
        self.rope_dim = qk_rope_head_dim
        self.v_head_dim = v_head_dim
        self.q_head_dim = qk_nope_head_dim + qk_rope_head_dim
        self.scale = self.q_head_dim**-0.5
        if q_lora_rank is None:
            self.q_proj = ThreadedLinear(hidden_size, num_heads * self.q_head_dim, bias=False)
        else:
            self.q_a_proj = ThreadedLinear(hidden_size, q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(q_lora_rank, rms_norm_eps)
            self.q_b_proj = ThreadedLinear(q_lora_rank, num_heads * self.q_head_dim, bias=False)
        self.kv_a_proj_with_mqa = ThreadedLinear(
            hidden_size, kv_lora_rank + qk_rope_head_dim, bias=False
        )
        self.kv_a_layernorm = RMSNorm(kv_lora_rank, rms_norm_eps)
        self.kv_b_proj = ThreadedLinear(
            kv_lora_rank, num_heads * (qk_nope_head_dim + v_head_dim), bias=False
        )
        self.o_proj = ThreadedLinear(num_heads * v_head_dim, hidden_size, bias=False)

    def _queries(self, hidden: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "q_proj"):
            return self.q_proj(hidden)
        return self.q_b_proj(self.q_a_layernorm(self.q_a_proj(hidden)))

    def forward(
        self,
        hidden: torch.Tensor,
        rope: Rope,
        mask: torch.Tensor | None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        query = split_heads(self._queries(hidden), self.num_heads)
        q_nope, q_rope = query.split([self.nope_dim, self.rope_dim], dim=-1)
        latent, k_rope = self.kv_a_proj_with_mqa(hidden).split(
            [self.kv_lora_rank, self.rope_dim], dim=-1
        )
        latent = self.kv_a_layernorm(latent)
        q_rope = apply_rotary(pairs_to_halves(q_rope), *rope)
        k_rope = apply_rotary(pairs_to_halves(k_rope)[:, None], *rope)[:, 0]
        extends_past = cache is not None and cache.length > 0
        if cache is not None:
            latent, k_rope = cache.append(latent, k_rope)
        if extends_past and self.observer is not None:
            raise NotImplementedError(
                "MLA's attention is observed in a forward without a past only: a cached step "
                "attends in latent space, without per-head keys"
            )
        if extends_past:
            out = self._attend_absorbed(q_nope, q_rope, latent, k_rope, mask)
        else:
            out = self._attend_expanded(q_nope, q_rope, latent, k_rope, mask)
        return self.o_proj(merge_heads(out))

    def _attend_expanded(
        self,
        q_nope: torch.Tensor,
        q_rope: torch.Tensor,
        latent: torch.Tensor,
        k_rope: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Per-head keys/values from the latent, then ordinary SDPA: ``[B, H, T, v_head_dim]``."""
        batch, keys = latent.shape[:2]
        kv = split_heads(self.kv_b_proj(latent), self.num_heads)
        k_nope, value = kv.split([self.nope_dim, self.v_head_dim], dim=-1)
        k_rope = k_rope[:, None].expand(batch, self.num_heads, keys, self.rope_dim)
        query = torch.cat((q_nope, q_rope), dim=-1)
        key = torch.cat((k_nope, k_rope), dim=-1)
        return causal_attention(query, key, value, mask, self.scale, self.observer)

    def _attend_absorbed(
        self,
        q_nope: torch.Tensor,
        q_rope: torch.Tensor,
        latent: torch.Tensor,
        k_rope: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Attention in latent space: every head shares one key/value sequence, so the heads are
        stacked as extra query rows of a single-head SDPA; ``[B, H, T, v_head_dim]``."""
        batch, heads, length, _ = q_nope.shape
        w_kv = self.kv_b_proj.weight.view(heads, self.nope_dim + self.v_head_dim, -1)
        w_k, w_v = w_kv.split([self.nope_dim, self.v_head_dim], dim=1)
        query = torch.cat((q_nope @ w_k, q_rope), dim=-1).reshape(batch, 1, heads * length, -1)
        key = torch.cat((latent, k_rope), dim=-1)[:, None]
        if mask is not None:
            mask = mask.expand(mask.shape[0], heads, length, -1).reshape(
                mask.shape[0], 1, -1, mask.shape[-1]
            )
        out = sdpa_attention(query, key, latent[:, None], mask, self.scale)
        return out.view(batch, heads, length, -1) @ w_v.transpose(1, 2)


def build_attention(
    kind: str,
    hidden_size: int,
    num_heads: int,
    head_dim: int | None = None,
    mla: Mapping[str, Any] | None = None,
    rms_norm_eps: float = 1e-6,
) -> MultiHeadAttention | MultiHeadLatentAttention:
    """One attention block of ``kind`` ``"mha"`` or ``"mla"`` (``mla`` holds MLA's dimensions)."""
    if kind == "mha":
        if mla:
            raise ValueError(f"mla settings {dict(mla)} were given but attention is 'mha'")
        return MultiHeadAttention(hidden_size, num_heads, head_dim)
    if kind == "mla":
        if head_dim is not None:
            raise ValueError("head_dim applies to 'mha' only; MLA sets qk_*_head_dim/v_head_dim")
        return MultiHeadLatentAttention(
            hidden_size, num_heads, rms_norm_eps=rms_norm_eps, **dict(mla or {})
        )
    raise ValueError(f"unknown attention {kind!r}; valid: {', '.join(ATTENTION_KINDS)}")

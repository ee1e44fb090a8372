"""The decoder stack shared by every zoo decoder: embeddings, pre-norm layers, final norm, LM head.

A concrete decoder (``deepseek_moe``, ``dense_lm``) only chooses each layer's attention and
feed-forward block; positions, masks, the KV cache and the MoE auxiliary loss are handled here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from decoders.attention import AttentionObserver, build_attention, build_attention_mask
from decoders.base import DecoderOutput, LanguageDecoder
from decoders.kv_cache import KVCache, LayerCache
from decoders.lm_head import ColumnMajorLMHead
from decoders.moe import MoEFeedForward
from zoo.layers import RMSNorm, Rope, RotaryEmbedding, ThreadedLinear
from zoo.model.component import linear_paths


class DecoderLayer(nn.Module):
    """``x + attn(norm(x))`` then ``x + mlp(norm(x))``; the MLP is a SwiGLU or an MoE block."""

    def __init__(
        self, self_attn: nn.Module, mlp: nn.Module, hidden_size: int, rms_norm_eps: float
    ) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.mlp = mlp
        self.input_layernorm = RMSNorm(hidden_size, rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(hidden_size, rms_norm_eps)

    def forward(
        self,
        hidden: torch.Tensor,
        rope: Rope,
        mask: torch.Tensor | None,
        cache: LayerCache | None,
        token_mask: torch.Tensor | None,
        real_tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``real_tokens`` (bool ``[B, T]``), when given, restricts the MLP to those positions:
        padding rows then skip it (nothing real attends to them), which saves a left-padded
        batch's prefill the MLP work of its padding."""
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), rope, mask, cache)
        normed = self.post_attention_layernorm(hidden)
        if real_tokens is None:
            out, aux_loss = self._feed_forward(normed, token_mask)
            return hidden + out, aux_loss
        out, aux_loss = self._feed_forward(normed[real_tokens][None], None)
        return hidden.index_put((real_tokens,), hidden[real_tokens] + out[0]), aux_loss

    def _feed_forward(
        self, normed: torch.Tensor, token_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(self.mlp, MoEFeedForward):
            return self.mlp(normed, token_mask)
        return self.mlp(normed), None


def default_position_ids(
    padding_mask: torch.Tensor | None, batch: int, length: int, past_len: int, device: torch.device
) -> torch.Tensor:
    """Positions of the new tokens: counted over real tokens only, so a left-padded row gets the
    same positions as the unpadded sequence (padding positions get 0, as in transformers)."""
    if padding_mask is None:
        return torch.arange(past_len, past_len + length, device=device).expand(batch, length)
    positions = padding_mask.long().cumsum(-1) - 1
    return positions.masked_fill(padding_mask == 0, 0)[:, -length:]


class TransformerDecoder(LanguageDecoder):
    """Causal LM over embeddings: pre-norm layers between a token embedding and an LM head.

    Layer ``i`` pairs an attention block of kind ``attention`` (see :func:`build_attention`)
    with ``feed_forwards[i]``.

    ``forward`` takes an optional ``[B, past + T]`` padding mask (left padding works), derives
    positions from it, appends to the :class:`KVCache` it is given (or starts one when
    ``use_cache``) and sums the MoE layers' balance losses into ``aux_loss`` in training.
    ``logits_to_keep=n`` computes the logits of the last ``n`` positions only (generation); a
    boolean ``[B, T]`` tensor instead computes those of the marked positions only, as ``[N,
    vocab]`` in row-major order (training: the positions that have a label; the LM head over
    a 129k vocabulary is the largest matmul of a short-answer step).
    """

    def __init__(
        self,
        feed_forwards: Sequence[nn.Module],
        vocab_size: int,
        hidden_size: int,
        num_attention_heads: int,
        head_dim: int | None = None,
        attention: str = "mha",
        mla: Mapping[str, Any] | None = None,
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-6,
        tie_word_embeddings: bool = False,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.embed_tokens = nn.Embedding(vocab_size, hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(
                build_attention(
                    attention, hidden_size, num_attention_heads, head_dim, mla, rms_norm_eps
                ),
                feed_forward,
                hidden_size,
                rms_norm_eps,
            )
            for feed_forward in feed_forwards
        )
        self.norm = RMSNorm(hidden_size, rms_norm_eps)
        # a tied head shares the embedding's row-major table
        self.lm_head = (
            ThreadedLinear(hidden_size, vocab_size, bias=False)
            if tie_word_embeddings
            else ColumnMajorLMHead(hidden_size, vocab_size)
        )
        self.rotary = RotaryEmbedding(self.layers[0].self_attn.rope_dim, rope_theta)
        for parameter in self.parameters():
            if parameter.dim() >= 2:
                nn.init.normal_(parameter, std=initializer_range)
        if tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def reset_derived_buffers(self) -> None:
        """The rotary frequencies."""
        super().reset_derived_buffers()
        self.rotary.reset_derived_buffers()

    def roles(self) -> dict[str, str]:
        """``token_embedding`` and ``lm_head`` (the same table when tied)."""
        return {**super().roles(), "token_embedding": "embed_tokens", "lm_head": "lm_head"}

    def adapter_targets(self) -> dict[str, list[str]]:
        """``decoder_attention`` (every projection of each layer's attention), ``decoder_mlp``
        (the dense feed-forward layers), ``shared_experts`` and ``routed_experts`` (each MoE
        layer's stacked ``w_gate_up`` and ``w_down`` tensors)."""
        targets: dict[str, list[str]] = {
            "decoder_attention": [],
            "decoder_mlp": [],
            "shared_experts": [],
            "routed_experts": [],
        }
        for i, layer in enumerate(self.layers):
            targets["decoder_attention"] += linear_paths(layer.self_attn, f"layers.{i}.self_attn")
            mlp = layer.mlp
            if not isinstance(mlp, MoEFeedForward):
                targets["decoder_mlp"] += linear_paths(mlp, f"layers.{i}.mlp")
                continue
            if mlp.shared_experts is not None:
                targets["shared_experts"] += linear_paths(
                    mlp.shared_experts, f"layers.{i}.mlp.shared_experts"
                )
            experts = f"layers.{i}.mlp.experts"
            targets["routed_experts"] += [
                f"{experts}.{name}" for name, _ in mlp.experts.named_parameters()
            ]
        return {**super().adapter_targets(), **targets}

    @contextmanager
    def observe_attention(self, observer: AttentionObserver) -> Iterator[None]:
        """Within the block, each layer's self-attention runs the eager kernel and hands its
        probabilities ``[B, H, T, S]`` to ``observer``, layer by layer."""
        attentions = [layer.self_attn for layer in self.layers]
        for attention in attentions:
            attention.observer = observer
        try:
            yield
        finally:
            for attention in attentions:
                attention.observer = None

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: object | None = None,
        use_cache: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
    ) -> DecoderOutput:
        batch, length, _ = inputs_embeds.shape
        cache = past_key_values
        if cache is None and use_cache:
            cache = KVCache(len(self.layers))
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(
                "past_key_values must be the KVCache this decoder returned, got "
                f"{type(cache).__name__}"
            )
        past_len = cache.seq_len if cache is not None else 0
        if attention_mask is not None and tuple(attention_mask.shape) != (batch, past_len + length):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}; expected "
                f"[batch, past + new] = {[batch, past_len + length]}"
            )
        if position_ids is None:
            position_ids = default_position_ids(
                attention_mask, batch, length, past_len, inputs_embeds.device
            )
        rope = self.rotary(position_ids, inputs_embeds.dtype)
        mask = build_attention_mask(attention_mask, length, past_len, inputs_embeds.device)
        token_mask = attention_mask[:, -length:] if attention_mask is not None else None
        # Outside training (where the balance loss counts tokens per sequence), padding skips
        # the MLPs; its hidden states are never read by a real token.
        real_tokens = None
        if not self.training and token_mask is not None and not bool(token_mask.all()):
            real_tokens = token_mask.bool()

        hidden, aux_loss = inputs_embeds, None
        for index, layer in enumerate(self.layers):
            layer_cache = cache.layer(index) if cache is not None else None
            hidden, layer_aux = layer(hidden, rope, mask, layer_cache, token_mask, real_tokens)
            if layer_aux is not None:
                aux_loss = layer_aux if aux_loss is None else aux_loss + layer_aux
        if isinstance(logits_to_keep, torch.Tensor):
            hidden = hidden[logits_to_keep]
        elif logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        hidden = self.norm(hidden)
        return DecoderOutput(self.lm_head(hidden), cache if use_cache else None, aux_loss)

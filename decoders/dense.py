"""A light dense decoder for stage-1 encoder pretraining and ablations.

The same attention, norm, rotary and SwiGLU blocks as ``deepseek_moe``, with a SwiGLU MLP in
every layer; small by default. The vocabulary defaults to the DeepSeek-OCR tokenizer's so the
stage-1 model reads the same prompts; input and output embeddings are tied to keep it light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from decoders.transformer import TransformerDecoder
from zoo.layers import SwiGLU
from zoo.registry import register_decoder


@register_decoder("dense_lm")
class DenseDecoder(TransformerDecoder):
    """Small dense causal LM (SwiGLU in every layer; MHA or MLA) for encoder pretraining."""

    def __init__(
        self,
        vocab_size: int = 129280,
        hidden_size: int = 512,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 8,
        head_dim: int | None = None,
        intermediate_size: int = 1408,
        attention: str = "mha",
        mla: Mapping[str, Any] | None = None,
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-6,
        tie_word_embeddings: bool = True,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__(
            [SwiGLU(hidden_size, intermediate_size) for _ in range(num_hidden_layers)],
            vocab_size,
            hidden_size,
            num_attention_heads,
            head_dim,
            attention,
            mla,
            rope_theta,
            rms_norm_eps,
            tie_word_embeddings,
            initializer_range,
        )

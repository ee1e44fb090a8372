"""DeepSeek-3B-MoE, the language decoder of DeepSeek-OCR and DeepSeek-OCR 2 (DeepSeek-V2 family).

Defaults are the released checkpoints' ``language_config``: 12 layers of width 1280, 10 heads of
128 with plain multi-head attention, layer 0 a dense SwiGLU (6848), layers 1-11 DeepSeekMoE with
64 routed experts (SwiGLU 896, greedy top-6 softmax routing) and 2 shared experts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from decoders.moe import MoEFeedForward
from decoders.transformer import TransformerDecoder
from zoo.layers import SwiGLU
from zoo.registry import register_decoder


@register_decoder("deepseek_moe")
class DeepseekMoEDecoder(TransformerDecoder):
    """DeepSeek-3B-MoE decoder of DeepSeek-OCR 1/2 (2.9B params, 0.57B active; MHA or MLA).

    Argument names follow DeepSeek-V2's config. ``attention="mla"`` switches every layer to
    multi-head latent attention, whose dimensions go in ``mla`` (``kv_lora_rank``,
    ``q_lora_rank``, ``qk_nope_head_dim``, ``qk_rope_head_dim``, ``v_head_dim``). The
    expert-balance loss (``aux_loss_alpha``, per ``"sequence"`` or ``"batch"``) is returned as
    ``aux_loss`` in training mode.
    """

    def __init__(
        self,
        vocab_size: int = 129280,
        hidden_size: int = 1280,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 10,
        head_dim: int | None = None,
        intermediate_size: int = 6848,
        first_k_dense_replace: int = 1,
        n_routed_experts: int = 64,
        moe_intermediate_size: int = 896,
        num_experts_per_tok: int = 6,
        n_shared_experts: int = 2,
        topk_method: str = "greedy",
        n_group: int = 1,
        topk_group: int = 1,
        norm_topk_prob: bool = False,
        routed_scaling_factor: float = 1.0,
        aux_loss_alpha: float = 0.001,
        aux_loss_level: str = "sequence",
        attention: str = "mha",
        mla: Mapping[str, Any] | None = None,
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
    ) -> None:
        def feed_forward(index: int) -> nn.Module:
            if index < first_k_dense_replace:
                return SwiGLU(hidden_size, intermediate_size)
            return MoEFeedForward(
                hidden_size,
                n_routed_experts,
                moe_intermediate_size,
                num_experts_per_tok,
                n_shared_experts,
                topk_method,
                n_group,
                topk_group,
                norm_topk_prob,
                routed_scaling_factor,
                aux_loss_alpha,
                aux_loss_level,
            )

        super().__init__(
            [feed_forward(index) for index in range(num_hidden_layers)],
            vocab_size,
            hidden_size,
            num_attention_heads,
            head_dim,
            attention,
            mla,
            rope_theta,
            rms_norm_eps,
            tie_word_embeddings=False,
            initializer_range=initializer_range,
        )

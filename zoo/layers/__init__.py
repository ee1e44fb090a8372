"""The leaf layer library shared by the encoders and decoders: the threaded linear layer
(``linear``), RMSNorm (``norms``), rotary positions (``rotary``), the SwiGLU MLP (``swiglu``),
one attention core with its backends (``attention``), SAM's relative-position specialisation
of it (``relpos_attention``) and weight-only int8 layers (``int8``). It imports nothing of the
zoo but itself.
"""

from zoo.layers.attention import (
    ATTENTION_BACKENDS,
    ATTENTION_KERNELS,
    GroupedQueryAttention,
    check_attention_backend,
    merge_heads,
    sdpa_attention,
    split_heads,
    split_qkv,
    xformers_available,
)
from zoo.layers.int8 import Int8Linear, int8_linear, quantize_per_channel
from zoo.layers.linear import ThreadedLinear, threaded_linear
from zoo.layers.norms import RMSNorm
from zoo.layers.rotary import Rope, RotaryEmbedding, apply_rotary, pairs_to_halves
from zoo.layers.swiglu import SwiGLU

__all__ = [
    "ATTENTION_BACKENDS",
    "ATTENTION_KERNELS",
    "GroupedQueryAttention",
    "Int8Linear",
    "RMSNorm",
    "Rope",
    "RotaryEmbedding",
    "SwiGLU",
    "ThreadedLinear",
    "apply_rotary",
    "check_attention_backend",
    "int8_linear",
    "merge_heads",
    "pairs_to_halves",
    "quantize_per_channel",
    "sdpa_attention",
    "split_heads",
    "split_qkv",
    "threaded_linear",
    "xformers_available",
]

"""One entry point from (spec, layout) to the mask object each attention backend consumes.

=========== =====================================================================
``sdpa``    additive float mask (``[T, T]`` or ``[B, 1, T, T]``) for SDPA
``eager``   the same additive mask, added to the scores before the softmax
``flex``    a flex_attention ``BlockMask``
``xformers`` an additive mask whose rows are 8-element aligned, as xformers' kernels need
=========== =====================================================================
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch.nn.attention.flex_attention import BlockMask

from masks.dense import additive_mask
from masks.flex import block_mask
from masks.layout import BatchLayout, SegmentsLike, as_batch_layout
from masks.spec import MaskSpec
from zoo.layers.attention import ATTENTION_BACKENDS


def compile_mask(
    spec: MaskSpec,
    layout: BatchLayout | SegmentsLike,
    backend: str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor | BlockMask:
    """The mask of ``spec`` over ``layout`` in the form attention ``backend`` consumes."""
    layout = as_batch_layout(layout)
    if backend in ("sdpa", "eager"):
        return additive_mask(spec, layout, dtype, device)
    if backend == "flex":
        return block_mask(spec, layout, device)
    if backend == "xformers":
        return xformers_bias(spec, layout, dtype, device)
    raise ValueError(f"unknown attention backend {backend!r}; valid: {list(ATTENTION_BACKENDS)}")


def xformers_bias(
    spec: MaskSpec,
    layout: BatchLayout | SegmentsLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``[B or 1, 1, T, T]`` additive bias stored with rows padded to a multiple of 8 elements
    (xformers' memory-efficient kernels refuse unaligned biases); expand it over batch and
    heads at the call."""
    return _xformers_bias(spec, as_batch_layout(layout), dtype, torch.device(device or "cpu"))


@lru_cache(maxsize=64)
@torch.inference_mode(False)
def _xformers_bias(
    spec: MaskSpec, layout: BatchLayout, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    additive = additive_mask(spec, layout, dtype, device)
    additive = additive if additive.dim() == 4 else additive[None, None]
    *lead, length = additive.shape
    aligned = -(-length // 8) * 8
    storage = torch.empty(*lead, aligned, dtype=dtype, device=additive.device)[..., :length]
    return storage.copy_(additive)

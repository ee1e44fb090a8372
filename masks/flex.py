"""Compile a spec over a layout to a flex_attention ``BlockMask``.

The BlockMask is built from :func:`masks.mask_mod.mask_mod`, the same function the dense masks
evaluate, and cached per (spec, layout, device). flex_attention skips the blocks the mask
leaves empty; on CUDA the attention kernel is compiled, on the CPU it runs unfused.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from masks.layout import BatchLayout, SegmentsLike, as_batch_layout
from masks.mask_mod import mask_mod
from masks.spec import MaskSpec


def block_mask(
    spec: MaskSpec,
    layout: BatchLayout | SegmentsLike,
    device: torch.device | str | None = None,
) -> BlockMask:
    """flex_attention's BlockMask of ``spec`` over ``layout``; a one-row layout broadcasts over
    the batch, a layout of ``B`` rows needs a batch of ``B``."""
    return _block_mask(spec, as_batch_layout(layout), torch.device(device or "cpu"))


@lru_cache(maxsize=64)
def _block_mask(spec: MaskSpec, layout: BatchLayout, device: torch.device) -> BlockMask:
    batch = None if layout.batch_size == 1 else layout.batch_size
    length = layout.length
    # compiled construction (CUDA) evaluates the mask block by block instead of as one dense
    # [B, T, T] grid; on the CPU compiling costs more than the grid
    return create_block_mask(
        mask_mod(spec, layout, device),
        batch,
        None,
        length,
        length,
        device=device,
        _compile=device.type == "cuda",
    )

"""Compile a spec over a layout to a flex_attention ``BlockMask``, never holding a dense
``T x T`` mask.

The mask is evaluated a few query rows at a time (``[B, 16, T]``) with
:func:`masks.mask_mod.mask_mod`, the same function the dense masks agree with, and each
128 x 128 block is classified as full, partial (flex_attention applies ``mask_mod`` inside it)
or empty (skipped). Memory grows with ``T``, not ``T**2``; the result is cached per
(spec, layout, device). On CUDA the attention kernel is compiled; on the
CPU it runs unfused.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask

from masks.dense import view_mask
from masks.layout import BatchLayout, SegmentsLike, as_batch_layout
from masks.mask_mod import mask_mod
from masks.spec import MaskSpec

BLOCK = 128  # flex_attention's default block size
ROWS_PER_STEP = 16  # query rows evaluated at once: bounds the [rows, 16, T] intermediates


def block_mask(
    spec: MaskSpec,
    layout: BatchLayout | SegmentsLike,
    device: torch.device | str | None = None,
) -> BlockMask:
    """flex_attention's BlockMask of ``spec`` over ``layout``; a one-row layout broadcasts over
    the batch, a layout of ``B`` rows needs a batch of ``B``."""
    return _block_mask(spec, as_batch_layout(layout), torch.device(device or "cpu"))


@lru_cache(maxsize=64)
@torch.inference_mode(False)
def _block_mask(spec: MaskSpec, layout: BatchLayout, device: torch.device) -> BlockMask:
    mod = mask_mod(spec, layout, device)
    rows, length = layout.batch_size, layout.length
    blocks = -(-length // BLOCK)
    b = torch.arange(rows, device=device)[:, None, None]
    kv = torch.arange(length, device=device)[None, None, :]
    partial = torch.zeros(rows, 1, blocks, blocks, dtype=torch.bool, device=device)
    full = torch.zeros_like(partial)
    for q_block in range(blocks):
        any_allowed = torch.zeros(rows, blocks, dtype=torch.bool, device=device)
        all_allowed = torch.ones_like(any_allowed)
        end = min(length, (q_block + 1) * BLOCK)
        for start in range(q_block * BLOCK, end, ROWS_PER_STEP):
            q = torch.arange(start, min(end, start + ROWS_PER_STEP), device=device)
            allowed = mod(b, None, q[None, :, None], kv)  # [rows, <=ROWS_PER_STEP, length]
            if not bool(allowed.any(dim=-1).all()):
                _raise_for_blind_tokens(spec, layout)
            per_block = F.pad(allowed, (0, blocks * BLOCK - length)).view(rows, -1, blocks, BLOCK)
            any_allowed |= per_block.any(dim=(1, 3))
            all_allowed &= per_block.all(dim=(1, 3))
        full[:, 0, q_block] = all_allowed
        partial[:, 0, q_block] = any_allowed & ~all_allowed
    return BlockMask.from_kv_blocks(
        *_indices(partial),
        *_indices(full),
        BLOCK_SIZE=BLOCK,
        mask_mod=mod,
        seq_lengths=(length, length),
    )


def _indices(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(count, indices)`` of the selected kv blocks of each query block, selected first."""
    counts = selected.sum(dim=-1, dtype=torch.int32)
    order = torch.argsort(selected.to(torch.int8), dim=-1, descending=True, stable=True)
    return counts, order.to(torch.int32)


def _raise_for_blind_tokens(spec: MaskSpec, layout: BatchLayout) -> None:
    """The dense check of each view, which names the segments that see nothing."""
    for view in dict.fromkeys(view for row in layout.rows for view in row):
        view_mask(spec, view, torch.device("cpu"))
    raise ValueError(f"mask {spec.name!r} leaves a token of {layout} with nothing to attend to")

"""A spec over a batch layout as one ``mask_mod(b, h, q_idx, kv_idx) -> bool`` function.

flex_attention's BlockMask calls it per block. It adds the layout's rules to the spec's
predicate: tokens see only tokens of their own view (packing is block-diagonal) and padding is
inert (seen by no one, seeing only itself). ``masks.dense`` applies the same rules by placing
each view's block on the diagonal; the property tests hold both to one token-by-token
reference.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

from masks.layout import BatchLayout
from masks.spec import MaskSpec

MaskMod = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor], torch.Tensor]


@lru_cache(maxsize=128)
@torch.inference_mode(False)
def mask_mod(spec: MaskSpec, layout: BatchLayout, device: torch.device) -> MaskMod:
    """flex_attention's ``mask_mod`` for ``spec`` over ``layout`` (True = may attend); ``b``
    indexes the layout's rows, ignored for a one-row layout. Indices broadcast, so one call may
    evaluate a whole block of rows."""
    label, view_id, _ = layout.tokens(device)
    allows = spec.predicate(layout.labels, device)
    one_row = layout.batch_size == 1

    def mod(b, h, q_idx, kv_idx):
        if one_row:  # a one-row layout serves a batch of any size: every row reads row 0
            b = torch.zeros_like(b)
        q_view = view_id[b, q_idx]
        real = q_view >= 0
        same_view = (q_view == view_id[b, kv_idx]) & real
        permitted = same_view & allows(label[b, q_idx], label[b, kv_idx], q_idx, kv_idx)
        return permitted | (~real & (q_idx == kv_idx))

    return mod

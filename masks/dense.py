"""Compile a spec over a layout to dense masks for SDPA and eager attention.

Rows are attending tokens, columns attended tokens. A layout of one row gives a ``[T, T]``
mask; a batch of several rows gives ``[B, 1, T, T]`` (the 1 broadcasts over heads). Each
distinct view is compiled once, block by block of its segment pairs (one broadcast evaluation
of the spec per block, no loop over tokens), then placed on the diagonal of its row; padding
tokens get only their own diagonal cell. Results are cached per (spec, layout, device): an
encoder that sees the same view size every step compiles its mask once. Cached tensors are
shared between callers: never modify them in place. They are built outside inference mode even
when the first call comes from it (a validation before training), or training could not save
them for backward; every cached mask of this package is built so.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from masks.layout import BatchLayout, SegmentsLike, as_batch_layout
from masks.spec import Layout, MaskSpec


def dense_mask(
    spec: MaskSpec,
    layout: BatchLayout | SegmentsLike,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean mask of ``spec`` over ``layout`` (True = may attend)."""
    return _dense_mask(spec, as_batch_layout(layout), torch.device(device or "cpu"))


def additive_mask(
    spec: MaskSpec,
    layout: BatchLayout | SegmentsLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Float mask to add to attention scores: 0 where allowed, the dtype's minimum elsewhere
    (the convention of the official DeepSeek-OCR 2 encoder and transformers)."""
    return _additive_mask(spec, as_batch_layout(layout), dtype, torch.device(device or "cpu"))


@lru_cache(maxsize=256)
@torch.inference_mode(False)
def view_mask(spec: MaskSpec, view: Layout, device: torch.device) -> torch.Tensor:
    """``[L, L]`` boolean mask of one view; raises if a token of it may attend to nothing
    (a softmax over nothing is NaN)."""
    labels = tuple(dict.fromkeys(segment.label for segment in view))
    allows = spec.predicate(labels, device)
    label_ids = [torch.tensor(labels.index(s.label), device=device) for s in view]
    ends = torch.tensor([s.length for s in view]).cumsum(0).tolist()
    starts = [end - s.length for end, s in zip(ends, view, strict=True)]
    index = torch.arange(ends[-1], device=device)
    mask = torch.empty(ends[-1], ends[-1], dtype=torch.bool, device=device)
    for q_label, q_start, q_end in zip(label_ids, starts, ends, strict=True):
        q_index = index[q_start:q_end, None]
        for k_label, k_start, k_end in zip(label_ids, starts, ends, strict=True):
            mask[q_start:q_end, k_start:k_end] = allows(
                q_label, k_label, q_index, index[None, k_start:k_end]
            )
    if device.type != "meta" and not bool(mask.any(dim=-1).all()):
        blind_rows = (~mask.any(dim=-1)).nonzero()[:, 0].tolist()
        token_labels = [s.label for s in view for _ in range(s.length)]  # error path only
        blind = list(dict.fromkeys(token_labels[row] for row in blind_rows))
        raise ValueError(
            f"mask {spec.name!r} over {list(view)} leaves tokens of segment(s) {blind} with "
            "nothing to attend to"
        )
    return mask


@lru_cache(maxsize=64)
@torch.inference_mode(False)
def _dense_mask(spec: MaskSpec, layout: BatchLayout, device: torch.device) -> torch.Tensor:
    if layout.batch_size == 1 and len(layout.rows[0]) == 1:
        return view_mask(spec, layout.rows[0][0], device)
    length = layout.length
    mask = torch.zeros(layout.batch_size, length, length, dtype=torch.bool, device=device)
    for b, row in enumerate(layout.rows):
        start = 0
        for view in row:
            block = view_mask(spec, view, device)
            end = start + block.shape[0]
            mask[b, start:end, start:end] = block
            start = end
        padding = torch.arange(start, length, device=device)
        mask[b, padding, padding] = True  # padding sees only itself
    return mask[0] if layout.batch_size == 1 else mask[:, None]


@lru_cache(maxsize=64)
@torch.inference_mode(False)
def _additive_mask(
    spec: MaskSpec, layout: BatchLayout, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    allowed = _dense_mask(spec, layout, device)
    blocked = torch.full(allowed.shape, torch.finfo(dtype).min, dtype=dtype, device=device)
    return blocked.masked_fill(allowed, 0.0)

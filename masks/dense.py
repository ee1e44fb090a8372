"""Compile a :class:`MaskSpec` over a layout to dense ``[T, T]`` masks for SDPA and eager attention.

Rows are attending tokens, columns attended tokens. The boolean mask (True = may attend) is
built in one gather from a label-pair table, with no loop over tokens, and cached per
(spec, layout, device): an encoder that sees the same view size every step compiles it once.
Cached tensors are shared between callers and must not be modified in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import torch

from masks.spec import Layout, MaskSpec, Segment, Visibility, as_layout

_CODES = {Visibility.NONE: 0, Visibility.ALL: 1, Visibility.CAUSAL: 2}


def dense_mask(
    spec: MaskSpec,
    segments: Iterable[Segment | tuple[str, int]],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean ``[T, T]`` mask of ``spec`` over ``segments`` (True = may attend)."""
    return _dense_mask(spec, as_layout(segments), torch.device(device or "cpu"))


def additive_mask(
    spec: MaskSpec,
    segments: Iterable[Segment | tuple[str, int]],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Float ``[T, T]`` mask to add to attention scores: 0 where allowed, the dtype's minimum
    elsewhere (the convention of the official DeepSeek-OCR 2 encoder and transformers)."""
    return _additive_mask(spec, as_layout(segments), dtype, torch.device(device or "cpu"))


@lru_cache(maxsize=64)
def _dense_mask(spec: MaskSpec, layout: Layout, device: torch.device) -> torch.Tensor:
    labels = list(dict.fromkeys(segment.label for segment in layout))
    table = torch.tensor(
        [[_CODES[spec.visibility(q, k)] for k in labels] for q in labels], device=device
    )
    label_ids = torch.tensor([labels.index(s.label) for s in layout], device=device)
    lengths = torch.tensor([s.length for s in layout], device=device)
    token_labels = label_ids.repeat_interleave(lengths)
    codes = table[token_labels[:, None], token_labels[None, :]]
    positions = torch.arange(token_labels.numel(), device=device)
    causal = positions[None, :] <= positions[:, None]
    allowed = (codes == _CODES[Visibility.ALL]) | ((codes == _CODES[Visibility.CAUSAL]) & causal)
    if device.type != "meta" and allowed.numel() and not bool(allowed.any(dim=-1).all()):
        blind = sorted({token_labels[i].item() for i in (~allowed.any(dim=-1)).nonzero()[:, 0]})
        raise ValueError(
            f"mask {spec.name!r} over {list(layout)} leaves tokens of segment(s) "
            f"{[labels[i] for i in blind]} with nothing to attend to"
        )
    return allowed


@lru_cache(maxsize=64)
def _additive_mask(
    spec: MaskSpec, layout: Layout, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    allowed = _dense_mask(spec, layout, device)
    blocked = torch.full(allowed.shape, torch.finfo(dtype).min, dtype=dtype, device=device)
    return blocked.masked_fill(allowed, 0.0)

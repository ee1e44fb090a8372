"""How views share sequences: several views packed in one row, rows padded into a batch.

A :class:`BatchLayout` is the length-and-label side of a mask: per batch row, one or more views
(each a :data:`~masks.spec.Layout` of segments) back to back, and padding after the row's last
view up to the longest row. Compiled masks make packing block-diagonal (tokens of different
views never see each other) and padding inert (padding tokens are seen by no one and see only
themselves, so every backend gives them finite outputs and no real token depends on them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import NamedTuple

import torch

from masks.spec import Layout, Segment, as_layout

SegmentsLike = Iterable[Segment | tuple[str, int]]


class TokenTable(NamedTuple):
    """Per-token facts of a :class:`BatchLayout`, each ``[B, T]`` (``long``)."""

    label: torch.Tensor  # index into BatchLayout.labels (0 for padding)
    view: torch.Tensor  # number of the token's view within its row, -1 for padding
    position: torch.Tensor  # index within the token's view (0 for padding)


@dataclass(frozen=True)
class BatchLayout:
    """Views per batch row; hashable, so masks compiled for it can be cached."""

    rows: tuple[tuple[Layout, ...], ...]

    def __post_init__(self) -> None:
        if not self.rows or not all(self.rows):
            raise ValueError(f"a batch layout needs >= 1 row of >= 1 view, got {self.rows}")

    @property
    def batch_size(self) -> int:
        return len(self.rows)

    @cached_property
    def lengths(self) -> tuple[int, ...]:
        """Number of real (non-padding) tokens of each row."""
        return tuple(sum(s.length for view in row for s in view) for row in self.rows)

    @property
    def length(self) -> int:
        """Sequence length ``T`` of the batch (the longest row)."""
        return max(self.lengths)

    @cached_property
    def labels(self) -> tuple[str, ...]:
        """Every segment label of the batch, in order of first appearance."""
        return tuple(dict.fromkeys(s.label for row in self.rows for view in row for s in view))

    def tokens(self, device: torch.device | str = "cpu") -> TokenTable:
        """The per-token label ids, view numbers and in-view positions (cached per device)."""
        return _token_table(self, torch.device(device))


def as_batch_layout(layout: BatchLayout | SegmentsLike) -> BatchLayout:
    """``layout`` itself, or one row holding one view made of the given segments."""
    if isinstance(layout, BatchLayout):
        return layout
    return BatchLayout(((as_layout(layout),),))


def pack(*views: SegmentsLike) -> BatchLayout:
    """One row holding ``views`` back to back, e.g. all crops and the global view of a page."""
    return BatchLayout((tuple(as_layout(view) for view in views),))


def stack(*rows: BatchLayout | SegmentsLike) -> BatchLayout:
    """A batch of the given rows (single views or packed layouts), padded to the longest."""
    return BatchLayout(tuple(row for item in rows for row in as_batch_layout(item).rows))


@lru_cache(maxsize=64)
@torch.inference_mode(False)
def _token_table(layout: BatchLayout, device: torch.device) -> TokenTable:
    label_ids = {label: i for i, label in enumerate(layout.labels)}
    tables = torch.zeros(3, layout.batch_size, layout.length, dtype=torch.long)
    tables[1] = -1
    for b, row in enumerate(layout.rows):
        lengths = torch.tensor([s.length for view in row for s in view])
        labels = torch.tensor([label_ids[s.label] for view in row for s in view])
        view_ids = torch.tensor([i for i, view in enumerate(row) for _ in view])
        view_lengths = torch.tensor([sum(s.length for s in view) for view in row])
        real = int(lengths.sum())
        tables[0, b, :real] = labels.repeat_interleave(lengths)
        tables[1, b, :real] = view_ids.repeat_interleave(lengths)
        view_starts = torch.cumsum(view_lengths, 0) - view_lengths
        tables[2, b, :real] = torch.arange(real) - view_starts.repeat_interleave(view_lengths)
    return TokenTable(*tables.to(device))

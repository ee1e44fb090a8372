"""Attention masks as data: which labelled segment of a sequence may attend to which.

A view is laid out as consecutive :class:`Segment` s, each a label and a length (for
DeepSeek-OCR 2: ``visual`` x m then ``query`` x n). A :class:`TableSpec` gives one
:class:`Visibility` per (attending label, attended label) pair and a default for pairs it does
not name; specs combine with ``|`` (union: allowed by either) and ``&`` (intersection: allowed
by both). A spec knows no lengths and no backend: ``masks.layout`` says how views share a
sequence (packing, padding) and the compilers in ``masks`` turn spec + layout into what one
attention kernel consumes, so a new variant is a new spec and a new backend a new compiler.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

# (query label ids, key label ids, query indices, key indices) -> may attend, all broadcastable.
LabelPredicate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Visibility(enum.Enum):
    """What the tokens of one segment see of another segment's tokens."""

    NONE = "none"
    ALL = "all"
    CAUSAL = "causal"  # keys at or before the attending token's own position
    WINDOW = "window"  # causal, and at most ``window - 1`` positions back (sliding window)


class Segment(NamedTuple):
    """A run of ``length`` consecutive tokens that share a ``label``."""

    label: str
    length: int


Layout = tuple[Segment, ...]


class Rule(NamedTuple):
    """Tokens labelled ``query`` see tokens labelled ``key`` with ``visibility``."""

    query: str
    key: str
    visibility: Visibility


class MaskSpec(ABC):
    """Who may attend to whom by segment label; hashable, so compiled masks can be cached."""

    name: str

    @property
    @abstractmethod
    def labels(self) -> tuple[str, ...]:
        """The labels the spec names, in order of first mention."""

    @abstractmethod
    def predicate(self, labels: tuple[str, ...], device: torch.device) -> LabelPredicate:
        """The spec as a tensor function over token label ids (indices into ``labels``) and
        token indices; built once per label vocabulary, then evaluated without Python loops
        (densely on broadcast grids, or per element inside flex_attention's ``mask_mod``)."""

    def __or__(self, other: MaskSpec) -> MaskSpec:
        return CombinedSpec("union", (self, other))

    def __and__(self, other: MaskSpec) -> MaskSpec:
        return CombinedSpec("intersection", (self, other))


@dataclass(frozen=True)
class TableSpec(MaskSpec):
    """A visibility per (attending label, attended label) pair.

    ``rules`` name pairs of labels; ``default`` covers every other pair, or, when ``None``,
    such a pair is an error (a spec made for ``visual``/``query`` refuses a ``text`` segment).
    ``window`` is the width of :attr:`Visibility.WINDOW` (the attending token included).
    """

    name: str
    rules: tuple[Rule, ...] = ()
    default: Visibility | None = None
    window: int | None = None

    def __post_init__(self) -> None:
        uses_window = Visibility.WINDOW in (self.default, *(rule.visibility for rule in self.rules))
        if uses_window and (self.window is None or self.window < 1):
            raise ValueError(
                f"mask {self.name!r} has a sliding-window rule, so it needs window >= 1, "
                f"got window={self.window}"
            )

    @classmethod
    def from_table(
        cls,
        name: str,
        table: Mapping[tuple[str, str], Visibility | str],
        default: Visibility | str | None = None,
        window: int | None = None,
    ) -> TableSpec:
        """A spec from ``{(attending label, attended label): visibility}``."""
        rules = tuple(Rule(q, k, Visibility(v)) for (q, k), v in table.items())
        return cls(name, rules, None if default is None else Visibility(default), window)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(label for rule in self.rules for label in rule[:2]))

    def visibility(self, query_label: str, key_label: str) -> Visibility:
        """The visibility of ``key_label`` tokens from ``query_label`` tokens."""
        for rule in self.rules:
            if (rule.query, rule.key) == (query_label, key_label):
                return rule.visibility
        if self.default is None:
            raise ValueError(
                f"mask {self.name!r} has no rule for segment pair ({query_label!r}, "
                f"{key_label!r}) and no default; it knows the labels {list(self.labels)}"
            )
        return self.default

    def predicate(self, labels: tuple[str, ...], device: torch.device) -> LabelPredicate:
        # Each visibility is a band of allowed distances ``q_index - k_index``: ALL any,
        # CAUSAL >= 0, WINDOW 0..window-1, NONE an empty band; one table of each end.
        far = 2**62
        bands = {
            Visibility.NONE: (1, 0),
            Visibility.ALL: (-far, far),
            Visibility.CAUSAL: (0, far),
            Visibility.WINDOW: (0, (self.window or 1) - 1),
        }
        table = torch.tensor(
            [[bands[self.visibility(q, k)] for k in labels] for q in labels],
            dtype=torch.long,
            device=device,
        ).reshape(len(labels), len(labels), 2)
        lowest, highest = table[..., 0], table[..., 1]

        def allows(q_label, k_label, q_index, k_index):
            behind = q_index - k_index
            return (behind >= lowest[q_label, k_label]) & (behind <= highest[q_label, k_label])

        return allows


@dataclass(frozen=True)
class CombinedSpec(MaskSpec):
    """The union (either part allows) or intersection (both allow) of two or more specs."""

    operation: Literal["union", "intersection"]
    parts: tuple[MaskSpec, ...]

    def __post_init__(self) -> None:
        if self.operation not in ("union", "intersection"):
            raise ValueError(f"operation must be 'union' or 'intersection', got {self.operation!r}")

    @property
    def name(self) -> str:  # type: ignore[override]
        symbol = " | " if self.operation == "union" else " & "
        return "(" + symbol.join(part.name for part in self.parts) + ")"

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(label for part in self.parts for label in part.labels))

    def predicate(self, labels: tuple[str, ...], device: torch.device) -> LabelPredicate:
        predicates = [part.predicate(labels, device) for part in self.parts]
        union = self.operation == "union"

        def allows(q_label, k_label, q_index, k_index):
            result = predicates[0](q_label, k_label, q_index, k_index)
            for predicate in predicates[1:]:
                other = predicate(q_label, k_label, q_index, k_index)
                result = (result | other) if union else (result & other)
            return result

        return allows


def as_layout(segments: Iterable[Segment | tuple[str, int]]) -> Layout:
    """A validated layout of one view from ``(label, length)`` pairs."""
    layout = tuple(Segment(str(label), int(length)) for label, length in segments)
    if not layout:
        raise ValueError("a mask layout needs at least one segment, got none")
    negative = [segment for segment in layout if segment.length < 0]
    if negative:
        raise ValueError(f"segment lengths must be >= 0, got {negative}")
    return layout

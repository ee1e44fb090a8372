"""Attention masks as data: which labelled segment of a sequence may attend to which.

A sequence is laid out as consecutive :class:`Segment` s, each a label and a length (for
DeepSeek-OCR 2: ``visual`` x m then ``query`` x n). A :class:`MaskSpec` gives one
:class:`Visibility` per (attending label, attended label) pair and a default for pairs it does
not name. The spec knows no lengths and no backend: ``masks.dense`` (and later compilers) turn a
spec plus a layout into what one attention kernel consumes, so a new variant is a new spec and
a new backend is a new compiler.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple


class Visibility(enum.Enum):
    """What the tokens of one segment see of another segment's tokens."""

    NONE = "none"
    ALL = "all"
    CAUSAL = "causal"  # keys at or before the attending token's own position


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


@dataclass(frozen=True)
class MaskSpec:
    """Who may attend to whom, by segment label; hashable so compiled masks can be cached.

    ``rules`` name pairs of labels; ``default`` covers every other pair, or, when ``None``,
    such a pair is an error (a spec made for ``visual``/``query`` refuses a ``text`` segment).
    """

    name: str
    rules: tuple[Rule, ...] = ()
    default: Visibility | None = None

    @classmethod
    def from_table(
        cls,
        name: str,
        table: Mapping[tuple[str, str], Visibility | str],
        default: Visibility | str | None = None,
    ) -> MaskSpec:
        """A spec from ``{(attending label, attended label): visibility}``."""
        rules = tuple(Rule(q, k, Visibility(v)) for (q, k), v in table.items())
        return cls(name, rules, None if default is None else Visibility(default))

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels the rules name, in order of first mention."""
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


def as_layout(segments: Iterable[Segment | tuple[str, int]]) -> Layout:
    """A validated layout from ``(label, length)`` pairs."""
    layout = tuple(Segment(str(label), int(length)) for label, length in segments)
    if not layout:
        raise ValueError("a mask layout needs at least one segment, got none")
    negative = [segment for segment in layout if segment.length < 0]
    if negative:
        raise ValueError(f"segment lengths must be >= 0, got {negative}")
    return layout

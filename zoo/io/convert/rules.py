"""Regex rename rules: the small language every checkpoint layout mapping is written in."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RenameRule:
    """Rename keys that fully match ``pattern`` to ``replacement`` (``re`` group syntax)."""

    pattern: str
    replacement: str

    def apply(self, key: str) -> str | None:
        match = re.fullmatch(self.pattern, key)
        return match.expand(self.replacement) if match else None


def rename_key(key: str, rules: Iterable[RenameRule]) -> str | None:
    """The key renamed by the first matching rule, or ``None`` when no rule matches."""
    for rule in rules:
        renamed = rule.apply(key)
        if renamed is not None:
            return renamed
    return None


def rename_state_dict(
    state_dict: Mapping[str, torch.Tensor], rules: Iterable[RenameRule]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename every key; returns the renamed dict and the keys no rule matched."""
    rules = list(rules)
    renamed: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, tensor in state_dict.items():
        new_key = rename_key(key, rules)
        if new_key is None:
            unmatched.append(key)
        else:
            renamed[new_key] = tensor
    return renamed, unmatched


def prefixed(prefix_from: str, prefix_to: str, rules: Iterable[RenameRule]) -> list[RenameRule]:
    """Rules of a sub-module re-rooted: ``prefix_from + key`` -> ``prefix_to + renamed``."""
    return [
        RenameRule(
            re.escape(prefix_from) + r.pattern, prefix_to.replace("\\", "\\\\") + r.replacement
        )
        for r in rules
    ]


def _template_pattern(template: str) -> str:
    return re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>\\d+)", re.escape(template)) + "(?P<rest>.*)"


def _template_replacement(template: str) -> str:
    return re.sub(r"\{(\w+)\}", r"\\g<\1>", template.replace("\\", "\\\\")) + r"\g<rest>"


def template_rules(templates: Sequence[tuple[str, str]], reverse: bool = False) -> list[RenameRule]:
    """Rules renaming names that start with the first template of each pair to the second
    (or the other way with ``reverse``)."""
    pairs = [(target, source) for source, target in templates] if reverse else templates
    return [
        RenameRule(_template_pattern(source), _template_replacement(target))
        for source, target in pairs
    ]

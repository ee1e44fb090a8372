"""What every suite shares: run settings, the model pairs (built once, on first use) and the
result rows it reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import DeepseekOcr2ForConditionalGeneration

from zoo.bench.measure import Stats
from zoo.bench.models import (
    FULL_ENCODER,
    MEDIUM_ENCODER,
    TINY_DECODER,
    TINY_ENCODER,
    ModelSize,
    build_zoo_model,
    reduced_decoder,
    transformers_twin,
)
from zoo.model.ocr_model import OCRModel


@dataclass
class BenchContext:
    """Settings of one ``python -m zoo.bench`` run.

    ``tiny`` swaps every model for tiny widths (smoke runs); otherwise ``main`` has full-size
    encoders and a real-width decoder cut to ``decoder_layers`` layers, ``medium`` real widths
    at reduced depth (training step), ``eval`` a tiny encoder with the ``main`` decoder (the
    batched-generation throughput). ``fullsize_*`` and ``page_tokens`` set the ``fullsize``
    suite (:mod:`zoo.bench.fullsize`); ``fullsize_rounds`` is how many times it runs its sides
    in turn.
    """

    repeats: int = 5
    warmup: int = 1
    threads: int = 2
    tiny: bool = False
    decoder_layers: int = 3
    fullsize_model: str = "full"
    fullsize_folder: Path | None = None
    fullsize_rounds: int = 2
    page_tokens: int = 512
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    _pairs: dict[str, tuple[OCRModel, DeepseekOcr2ForConditionalGeneration]] = field(
        default_factory=dict
    )

    def size(self, name: str) -> ModelSize:
        """The :class:`ModelSize` called ``name`` (``main``, ``medium``, ``eval``, ``tiny``)."""
        tiny = ModelSize("tiny", TINY_ENCODER, TINY_DECODER)
        if self.tiny or name == "tiny":
            return tiny
        decoder = reduced_decoder(self.decoder_layers)
        sizes = {
            "main": ModelSize("main", FULL_ENCODER, decoder),
            "medium": ModelSize("medium", MEDIUM_ENCODER, reduced_decoder(2)),
            "eval": ModelSize("eval", TINY_ENCODER, decoder),
        }
        if name not in sizes:
            raise ValueError(f"unknown model size {name!r}; valid: {sorted(sizes)} or 'tiny'")
        return sizes[name]

    def pair(self, name: str) -> tuple[OCRModel, DeepseekOcr2ForConditionalGeneration]:
        """The zoo model of size ``name`` and transformers' twin with the same weights."""
        key = self.size(name).name
        if key not in self._pairs:
            model = build_zoo_model(self.size(name))
            self._pairs[key] = (model, transformers_twin(model))
        return self._pairs[key]

    def release(self, name: str) -> None:
        """Drop a pair no later suite needs (memory)."""
        self._pairs.pop(self.size(name).name, None)


def comparison(
    case: str,
    zoo: Stats,
    transformers: Stats | None,
    target: str | None = None,
    higher_is_better: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """One result row: both sides' figures, the ratio zoo / transformers of the medians, and
    whether ``target`` (e.g. ``"<= 1.0"``) holds for that ratio."""
    ratio = None if transformers is None else zoo.median / transformers.median
    row: dict[str, Any] = {
        "case": case,
        "zoo": zoo.as_dict(),
        "transformers": None if transformers is None else transformers.as_dict(),
        "ratio": ratio,
        "higher_is_better": higher_is_better,
        "target": target,
        "met": None if target is None or ratio is None else meets(ratio, target),
    }
    row.update(extra)
    return row


def memory_comparison(
    case: str, zoo_bytes: float, reference_bytes: float, target: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A :func:`comparison` row of two peak memories given in bytes, shown in MiB."""
    zoo = Stats.of([zoo_bytes / 2**20], "MiB")
    return comparison(case, zoo, Stats.of([reference_bytes / 2**20], "MiB"), target, **extra)


def meets(value: float, target: str) -> bool:
    """Whether ``value`` satisfies ``target``, written ``"<= x"`` or ``">= x"``."""
    operator, _, bound = target.partition(" ")
    if operator == "<=":
        return value <= float(bound)
    if operator == ">=":
        return value >= float(bound)
    raise ValueError(f"target must read '<= x' or '>= x', got {target!r}")

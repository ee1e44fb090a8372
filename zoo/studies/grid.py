"""A study grid: which systems are trained, with which ``zoo.train`` overrides, and which
inference-time interventions are evaluated on which trained system.

A system is the study's experiment config plus at most one ablation experiment and an encoder
choice, so the study trains exactly what a user gets from
``python -m zoo.train experiment=[<study>,<ablation>] encoder=<encoder>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class System:
    """One trained system of the grid: a name, its encoder and its ablation (None: none)."""

    name: str
    encoder: str
    ablation: str | None = None
    description: str = ""

    def train_overrides(self, experiment: str) -> list[str]:
        """The ``zoo.train`` overrides that build this system on top of ``experiment``."""
        experiments = experiment if self.ablation is None else f"[{experiment},{self.ablation}]"
        return [f"experiment={experiments}", f"encoder={self.encoder}"]


@dataclass(frozen=True)
class Intervention:
    """An inference-time intervention (:mod:`encoders.interventions`) evaluated on the trained
    weights of ``system``; no training of its own."""

    name: str
    kind: str
    system: str
    description: str = ""


@dataclass(frozen=True)
class Grid:
    """The systems and interventions of a study, the experiment they share and the baseline
    every other system is tested against."""

    experiment: str
    systems: tuple[System, ...]
    interventions: tuple[Intervention, ...]
    baseline: str

    def __post_init__(self) -> None:
        names = [s.name for s in self.systems] + [i.name for i in self.interventions]
        if len(set(names)) != len(names):
            raise ValueError(f"grid names must be unique, got {names}")
        if self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not in the grid {names}")
        for intervention in self.interventions:
            if intervention.system not in {s.name for s in self.systems}:
                raise ValueError(
                    f"intervention {intervention.name!r} is on {intervention.system!r}, "
                    "which the grid does not train"
                )

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.systems] + [i.name for i in self.interventions]

    def select(self, names: Sequence[str] | None) -> Grid:
        """The grid restricted to ``names`` (None: all); an intervention keeps its system."""
        if not names:
            return self
        unknown = sorted(set(names) - set(self.names))
        if unknown:
            raise ValueError(f"unknown systems {unknown}; this grid has {self.names}")
        interventions = tuple(i for i in self.interventions if i.name in names)
        needed = set(names) | {i.system for i in interventions}
        systems = tuple(s for s in self.systems if s.name in needed)
        baseline = self.baseline if self.baseline in needed else systems[0].name
        return Grid(self.experiment, systems, interventions, baseline)


READING_ORDER = Grid(
    experiment="study_glyph_blocks",
    systems=(
        System("deepencoder", "deepencoder", None, "v1: SAM + CLIP (DeepEncoder)"),
        System("causal_flow", "causal_flow", None, "v2: SAM + causal-flow LM (DeepEncoder V2)"),
        System(
            "mask_bidirectional_queries", "causal_flow", "mask_bidirectional_queries",
            "v2, queries attend to each other bidirectionally",
        ),
        System(
            "mask_causal", "causal_flow", "mask_causal", "v2, one causal mask over all tokens"
        ),
        System(
            "mask_bidirectional", "causal_flow", "mask_bidirectional",
            "v2's LM as a ViT: no queries, bidirectional",
        ),
        System("query_ratio_half", "causal_flow", "query_ratio_half", "v2 with m/2 queries"),
        System(
            # its own encoder: an explicit encoder=causal_flow would undo the ablation's
            "encoder_decoder_queries", "cross_attention_queries", "encoder_decoder_queries",
            "queries in a separate stack cross-attending to the visual tokens",
        ),
    ),
    interventions=(
        Intervention(
            "intervention_shuffle", "shuffle", "causal_flow",
            "trained v2, query outputs in a fixed random order",
        ),
        Intervention(
            "intervention_other_image", "other_image", "causal_flow",
            "trained v2, each page given another page's query outputs",
        ),
    ),
    baseline="causal_flow",
)  # fmt: skip

STUDIES = {"reading_order": READING_ORDER}

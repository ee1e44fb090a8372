"""Attention-mask algebra: specs over labelled segments, compiled to each attention backend.

Importing the package registers the built-in specs (``causal_flow``, ``bidirectional``,
``causal``) with ``zoo.registry.register_mask``.
"""

from masks import builtin  # noqa: F401  (registers the built-in specs)
from masks.dense import additive_mask, dense_mask
from masks.spec import Layout, MaskSpec, Rule, Segment, Visibility, as_layout

__all__ = [
    "Layout",
    "MaskSpec",
    "Rule",
    "Segment",
    "Visibility",
    "additive_mask",
    "as_layout",
    "dense_mask",
]

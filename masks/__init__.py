"""Attention-mask algebra: specs over labelled segments, laid out in (packed, padded) batches and
compiled to each attention backend of ``zoo.layers.attention`` (dense SDPA/eager masks,
flex_attention BlockMask, xformers bias).

Importing the package registers the built-in specs (``causal_flow`` and its variants,
``bidirectional``, ``causal``) with ``zoo.registry.register_mask``.
"""

from masks import builtin  # noqa: F401  (registers the built-in specs)
from masks.backends import compile_mask, xformers_bias
from masks.dense import additive_mask, dense_mask
from masks.flex import block_mask
from masks.layout import BatchLayout, TokenTable, as_batch_layout, pack, stack
from masks.mask_mod import mask_mod
from masks.spec import (
    CombinedSpec,
    Layout,
    MaskSpec,
    Rule,
    Segment,
    TableSpec,
    Visibility,
    as_layout,
)
from zoo.layers.attention import ATTENTION_BACKENDS, xformers_available

__all__ = [
    "ATTENTION_BACKENDS",
    "BatchLayout",
    "CombinedSpec",
    "Layout",
    "MaskSpec",
    "Rule",
    "Segment",
    "TableSpec",
    "TokenTable",
    "Visibility",
    "additive_mask",
    "as_batch_layout",
    "as_layout",
    "block_mask",
    "compile_mask",
    "dense_mask",
    "mask_mod",
    "pack",
    "stack",
    "xformers_available",
    "xformers_bias",
]

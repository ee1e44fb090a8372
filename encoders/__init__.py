"""Vision encoders; importing the package registers them."""

from encoders import (  # noqa: F401
    causal_flow,
    clip,
    cross_attention_queries,
    deepencoder,
    interventions,
    patch_unshuffle,
    sam,
)

"""Vision encoders; importing the package registers them."""

from encoders import causal_flow, clip, deepencoder, sam  # noqa: F401

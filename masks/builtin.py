"""The named mask specs of the zoo, registered for ``create_mask(name)`` and configs."""

from __future__ import annotations

from masks.spec import MaskSpec, Visibility
from zoo.registry import register_mask

VISUAL = "visual"
QUERY = "query"


@register_mask("causal_flow")
def causal_flow() -> MaskSpec:
    """DeepSeek-OCR 2: visual tokens see all visual tokens; queries see those + earlier queries.

    Over ``[visual (m) ; query (n)]`` this is ``[[1_mxm, 0_mxn], [1_nxm, LowerTri(n)]]``.
    """
    return MaskSpec.from_table(
        "causal_flow",
        {
            (VISUAL, VISUAL): Visibility.ALL,
            (VISUAL, QUERY): Visibility.NONE,
            (QUERY, VISUAL): Visibility.ALL,
            (QUERY, QUERY): Visibility.CAUSAL,
        },
    )


@register_mask("bidirectional")
def bidirectional() -> MaskSpec:
    """Every token sees every token, whatever the segments (ViT/CLIP-style encoders)."""
    return MaskSpec("bidirectional", default=Visibility.ALL)


@register_mask("causal")
def causal() -> MaskSpec:
    """Every token sees itself and the tokens before it, whatever the segments (plain LM)."""
    return MaskSpec("causal", default=Visibility.CAUSAL)

"""The named mask specs of the zoo, registered for ``create_mask(name)`` and configs.

All but ``causal`` and ``bidirectional`` are over the segments ``visual`` (the m tokens of a
view) and ``query`` (the n learnable queries that follow them), and differ from DeepSeek-OCR 2's
``causal_flow`` in one block of its 2 x 2 block pattern.
"""

from __future__ import annotations

from masks.spec import TableSpec, Visibility
from zoo.registry import register_mask

VISUAL = "visual"
QUERY = "query"


def visual_query_spec(
    name: str,
    visual_sees_query: Visibility,
    query_sees_query: Visibility,
    window: int | None = None,
) -> TableSpec:
    """A spec in which visual tokens see all visual tokens and queries see all visual tokens,
    with the two blocks that make the variants given."""
    return TableSpec.from_table(
        name,
        {
            (VISUAL, VISUAL): Visibility.ALL,
            (VISUAL, QUERY): visual_sees_query,
            (QUERY, VISUAL): Visibility.ALL,
            (QUERY, QUERY): query_sees_query,
        },
        window=window,
    )


@register_mask("causal_flow")
def causal_flow() -> TableSpec:
    """DeepSeek-OCR 2: visual tokens see all visual tokens; queries see those + earlier queries.

    Over ``[visual (m) ; query (n)]`` this is ``[[1_mxm, 0_mxn], [1_nxm, LowerTri(n)]]``.
    """
    return visual_query_spec("causal_flow", Visibility.NONE, Visibility.CAUSAL)


@register_mask("bidirectional_queries")
def bidirectional_queries() -> TableSpec:
    """causal_flow, but every query sees every query (no causal order among queries)."""
    return visual_query_spec("bidirectional_queries", Visibility.NONE, Visibility.ALL)


@register_mask("visual_only_queries")
def visual_only_queries() -> TableSpec:
    """causal_flow, but queries see no query, not even themselves (pure cross-attention)."""
    return visual_query_spec("visual_only_queries", Visibility.NONE, Visibility.NONE)


@register_mask("leaky_causal_flow")
def leaky_causal_flow() -> TableSpec:
    """causal_flow, but visual tokens also see every query (queries leak into the visual side)."""
    return visual_query_spec("leaky_causal_flow", Visibility.ALL, Visibility.CAUSAL)


@register_mask("windowed_queries")
def windowed_queries(window: int = 12) -> TableSpec:
    """causal_flow, but each query sees only itself and the ``window - 1`` queries before it."""
    return visual_query_spec("windowed_queries", Visibility.NONE, Visibility.WINDOW, window)


@register_mask("bidirectional")
def bidirectional() -> TableSpec:
    """Every token sees every token, whatever the segments (ViT-style; the LM as a ViT)."""
    return TableSpec("bidirectional", default=Visibility.ALL)


@register_mask("causal")
def causal() -> TableSpec:
    """Every token sees itself and the tokens before it, whatever the segments (plain LM)."""
    return TableSpec("causal", default=Visibility.CAUSAL)

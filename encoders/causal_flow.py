"""DeepEncoder V2 (DeepSeek-OCR 2): learnable queries read the SAM tokens through a Qwen2-shaped LM.

A view's ``m`` visual tokens (SAM tokenizer, 896 channels) are followed by ``n`` learnable
queries and the sequence ``[visual ; queries]`` (positions ``0..m+n-1``) goes through a
Qwen2-0.5B-shaped transformer without token embedding. Under the ``causal_flow`` mask the
visual tokens attend to each other bidirectionally, and each query attends to every visual
token and to the queries before it, so the queries re-read the page in a learned causal
order. Only the ``n`` query outputs (after the final norm) leave the encoder.

The release has one query set per view size: 144 queries for the 768 local crops and 256 for
the 1024 global view. The set is chosen by the number of visual tokens, as the official code
does: the set of view size ``S`` serves inputs with ``tokenizer.num_tokens(S)`` tokens (144
and 256 in the release); any other count is an error. (transformers instead takes the 768 set
for up to 144 tokens and the 1024 set above; the rules agree on every count the release
produces.)

Ablation options (defaults = the release): the mask (any registered spec over ``visual`` and
``query``), the attention kernel, the number of queries per visual token, how the query sets
are made, where the queries' positions start, and no queries at all (the LM as a ViT).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask

from encoders.base import VisionEncoder, create_tokenizer
from masks.backends import compile_mask
from masks.builtin import QUERY, VISUAL
from zoo.io.convert.pretrained_parts import qwen2_from_transformers
from zoo.layers import GroupedQueryAttention, RMSNorm, Rope, RotaryEmbedding, SwiGLU
from zoo.model.component import Component, WeightSource
from zoo.registry import create_mask, register_encoder

DEFAULT_TOKENIZER: dict[str, Any] = {"name": "sam_vitb", "downsample_channels": (512, 896)}
DEFAULT_QUERY_SETS: dict[int, int] = {768: 144, 1024: 256}
QUERY_INITS = ("learned", "shared_resized", "sinusoidal_2d")
QUERY_POSITIONS = ("continue", "restart")


class EncoderLayer(nn.Module):
    """Qwen2 decoder layer: ``x + attn(norm(x), mask)`` then ``x + swiglu(norm(x))``."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        intermediate_size: int,
        rms_norm_eps: float,
        attn_backend: str = "sdpa",
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(hidden_size, rms_norm_eps)
        self.self_attn = GroupedQueryAttention(
            hidden_size, num_heads, num_kv_heads, qkv_bias=True, backend=attn_backend
        )
        self.post_attention_layernorm = RMSNorm(hidden_size, rms_norm_eps)
        self.mlp = SwiGLU(hidden_size, intermediate_size)

    def forward(
        self,
        hidden: torch.Tensor,
        rope: Rope,
        mask: torch.Tensor | BlockMask | None,
        return_probs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The layer's output and, with ``return_probs``, its attention probabilities."""
        normed = self.input_layernorm(hidden)
        if return_probs:
            attended, probs = self.self_attn(normed, rope, mask, return_probs=True)
        else:
            attended, probs = self.self_attn(normed, rope, mask), None
        hidden = hidden + attended
        return hidden + self.mlp(self.post_attention_layernorm(hidden)), probs


class MaskedTransformer(Component):
    """A Qwen2 model without token embedding, run over given embeddings under a given mask.

    ``forward(embeds [B, T, C], mask) -> [B, T, C]`` with the final RMSNorm applied; ``mask`` is
    what ``masks.compile_mask`` makes for ``attn_backend``. Module names are Qwen2's
    (``layers.N.self_attn.q_proj``, ``norm``). A subclass with other layers (same constructor
    arguments) names them in ``layer_class``.
    """

    layer_class: type[EncoderLayer] = EncoderLayer

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        num_kv_heads: int,
        intermediate_size: int,
        rms_norm_eps: float,
        rope_theta: float,
        initializer_range: float = 0.02,
        attn_backend: str = "sdpa",
    ) -> None:
        super().__init__()
        self.attn_backend = attn_backend
        self.layers = nn.ModuleList(
            self.layer_class(
                hidden_size, num_heads, num_kv_heads, intermediate_size, rms_norm_eps, attn_backend
            )
            for _ in range(num_layers)
        )
        self.norm = RMSNorm(hidden_size, rms_norm_eps)
        self.rotary = RotaryEmbedding(hidden_size // num_heads, rope_theta)
        for module in self.modules():  # Qwen2's initialisation
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=initializer_range)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor | BlockMask | None,
        position_ids: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Hidden states; ``position_ids`` ``[B or 1, T]`` default to ``0..T-1``.

        ``return_attention`` runs the eager kernel (``mask`` must then be the dense additive
        one) and also returns each layer's attention probabilities ``[B, heads, T, T]``.
        """
        if position_ids is None:
            position_ids = torch.arange(embeds.shape[1], device=embeds.device)[None]
        rope = self.rotary(position_ids, embeds.dtype)
        hidden, attentions = embeds, []
        for layer in self.layers:
            hidden, probs = layer(hidden, rope, mask, return_attention)
            attentions.append(probs)
        hidden = self.norm(hidden)
        return (hidden, tuple(attentions)) if return_attention else hidden

    def reset_derived_buffers(self) -> None:
        """The rotary frequencies."""
        super().reset_derived_buffers()
        self.rotary.reset_derived_buffers()


def sinusoidal_2d(count: int, dim: int) -> torch.Tensor:
    """``[count, dim]`` fixed 2D sin-cos embeddings of ``count`` queries laid out row by row on
    a grid ``ceil(sqrt(count))`` wide: half the channels encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"sinusoidal_2d query embeddings need a width divisible by 4, got {dim}")
    columns = math.ceil(math.sqrt(count))
    index = torch.arange(count)
    frequencies = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float) / (dim // 4))

    def embed(coordinate: torch.Tensor) -> torch.Tensor:
        angles = coordinate[:, None].float() * frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    return torch.cat([embed(index // columns), embed(index % columns)], dim=-1)


class QuerySets(Component):
    """The query set of each view size, ``queries(view) -> [n, hidden]``, made by ``init``.

    ``learned`` (the release): one trained set per view size, ``N(0, 1)`` initialised, named
    by the view size (``queries.768``); ``shared_resized``: one trained set (``queries.shared``)
    as long as the largest, linearly interpolated along the query axis to each count;
    ``sinusoidal_2d``: fixed :func:`sinusoidal_2d` sets, neither trained nor saved.
    """

    def __init__(
        self,
        counts: Mapping[int, int],
        hidden_size: int,
        init: str = "learned",
        view_by_visual_tokens: Mapping[int, int] | None = None,
    ):
        super().__init__()
        if init not in QUERY_INITS:
            raise ValueError(f"unknown query_init {init!r}; valid: {list(QUERY_INITS)}")
        self.init = init
        self.counts = dict(counts)
        # which set reads a view, chosen by its visual-token count (see query_plan)
        self.view_by_visual_tokens = dict(view_by_visual_tokens or {})
        if init == "learned":
            # drawn in the given order, registered sorted by name (as nn.ParameterDict does), so
            # seeded initialisation and state-dict order match the encoder's first layout
            sets = {str(v): nn.Parameter(torch.randn(n, hidden_size)) for v, n in counts.items()}
            for name in sorted(sets):
                self.register_parameter(name, sets[name])
        elif init == "sinusoidal_2d":
            self.hidden_size = hidden_size
            for view, count in self.counts.items():
                self.register_buffer(str(view), sinusoidal_2d(count, hidden_size), persistent=False)
        else:
            longest = max(self.counts.values())
            self.shared = nn.Parameter(torch.randn(longest, hidden_size))

    def no_weight_decay(self) -> set[str]:
        """Every trained set: each is a table of learned tokens."""
        return super().no_weight_decay() | {name for name, _ in self.named_parameters()}

    def reset_derived_buffers(self) -> None:
        """Recompute the fixed (never stored) sinusoidal sets, e.g. after a meta-device build."""
        super().reset_derived_buffers()
        if self.init == "sinusoidal_2d":
            for view, count in self.counts.items():
                setattr(self, str(view), sinusoidal_2d(count, self.hidden_size))

    def for_visual_tokens(self, num_visual_tokens: int) -> torch.Tensor:
        """The ``[n, hidden]`` set that reads a view of ``num_visual_tokens`` visual tokens."""
        view = self.view_by_visual_tokens.get(num_visual_tokens)
        if view is None:
            served = {v: t for t, v in self.view_by_visual_tokens.items()}
            raise ValueError(
                f"no query set serves {num_visual_tokens} visual tokens; the sets serve (view "
                f"size: visual tokens) {served}; add the view size to query_sets"
            )
        return self(view)

    def forward(self, view: int) -> torch.Tensor:
        if self.init != "shared_resized":
            return getattr(self, str(view))
        count = self.counts[view]
        if count == self.shared.shape[0]:
            return self.shared
        resized = F.interpolate(self.shared.T[None], size=count, mode="linear", align_corners=True)
        return resized[0].T


def lm_tokenizer(tokenizer: Mapping[str, Any] | None, hidden_size: int) -> VisionEncoder:
    """The vision tokenizer that ``tokenizer`` names (default: the v2 SAM tokenizer), checked to
    give tokens as wide as the LM encoder that reads them."""
    tokenizer_spec = dict(DEFAULT_TOKENIZER if tokenizer is None else tokenizer)
    created = create_tokenizer(tokenizer_spec)
    if created.out_dim != hidden_size:
        raise ValueError(
            f"tokenizer {tokenizer_spec['name']!r} outputs {created.out_dim}-wide "
            f"tokens but the encoder is {hidden_size} wide; they must be equal"
        )
    return created


def query_plan(
    tokenizer: VisionEncoder,
    query_sets: Mapping[int | str, int] | None,
    query_ratio: float | None,
) -> tuple[dict[int, int], dict[int, int]]:
    """(view size -> number of queries, visual-token count -> view size) of a query encoder.

    Counts come from ``query_sets`` (default: the release's) or, with ``query_ratio``, as that
    multiple of each view's visual-token count (at least one). A view's set is chosen by its
    visual-token count, so two view sizes must not give the same count.
    """
    sizes = {int(view): int(n) for view, n in (query_sets or DEFAULT_QUERY_SETS).items()}
    if query_ratio is not None:
        if query_ratio <= 0:
            raise ValueError(f"query_ratio must be > 0, got {query_ratio}")
        sizes = {view: max(1, round(query_ratio * tokenizer.num_tokens(view))) for view in sizes}
    view_by_visual_tokens: dict[int, int] = {}
    for view in sizes:
        tokens = tokenizer.num_tokens(view)
        if tokens in view_by_visual_tokens:
            raise ValueError(
                f"query sets for views {view_by_visual_tokens[tokens]} and {view} both "
                f"serve {tokens} visual tokens; a set is chosen by the token count, so they "
                "must differ"
            )
        view_by_visual_tokens[tokens] = view
    return sizes, view_by_visual_tokens


@register_encoder("causal_flow")
class CausalFlowEncoder(VisionEncoder):
    """DeepSeek-OCR 2 DeepEncoder V2: SAM-B tokens read by causal-flow queries through Qwen2-0.5B.

    ``forward(pixels [B, 3, S, S]) -> [B, n, hidden_size]``: the outputs of the ``n`` queries
    of the set for view size ``S``. ``tokenizer`` names a registered encoder (and its keyword
    arguments) whose tokens are ``hidden_size`` wide; ``query_sets`` maps each view size to its
    number of queries (release: ``{768: 144, 1024: 256}``); ``mask`` names a registered mask
    spec over the segments ``visual`` and ``query`` (or is a mapping: ``name`` and its keyword
    arguments, e.g. ``{name: windowed_queries, window: 12}``).

    Ablation options: ``query_ratio`` sizes each set as that multiple of its view's visual
    token count (0.25, 0.5, 1, 2; at least one query), replacing the counts of ``query_sets``,
    whose keys still name the view sizes; ``query_init`` is one of :data:`QUERY_INITS` (see
    :class:`QuerySets`); ``query_positions`` ``continue`` numbers the queries ``m..m+n-1``
    after the visual tokens, ``restart`` numbers them ``0..n-1``; ``with_queries=False`` drops
    the queries and returns the ``m`` visual tokens' outputs (the LM as a ViT; the query
    options are then unused); ``attn_backend`` picks the attention kernel
    (``sdpa``, ``eager``, ``flex``, ``xformers``).
    """

    def __init__(
        self,
        tokenizer: Mapping[str, Any] | None = None,
        hidden_size: int = 896,
        num_layers: int = 24,
        num_heads: int = 14,
        num_kv_heads: int = 2,
        intermediate_size: int = 4864,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 1e6,
        mask: str | Mapping[str, Any] = "causal_flow",
        query_sets: Mapping[int | str, int] | None = None,
        initializer_range: float = 0.02,
        query_ratio: float | None = None,
        query_init: str = "learned",
        query_positions: str = "continue",
        with_queries: bool = True,
        attn_backend: str = "sdpa",
    ) -> None:
        super().__init__()
        self.tokenizer = lm_tokenizer(tokenizer, hidden_size)
        self.mask_spec = create_mask(mask) if isinstance(mask, str) else create_mask(**mask)
        if query_positions not in QUERY_POSITIONS:
            raise ValueError(
                f"unknown query_positions {query_positions!r}; valid: {list(QUERY_POSITIONS)}"
            )
        self.query_positions = query_positions
        self.attn_backend = attn_backend
        self.lm = MaskedTransformer(
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            intermediate_size,
            rms_norm_eps,
            rope_theta,
            initializer_range,
            attn_backend,
        )
        self.queries = None
        if with_queries:
            counts, view_by_visual_tokens = query_plan(self.tokenizer, query_sets, query_ratio)
            # learned sets start from nn.Embedding's N(0, 1), as the official query tables.
            self.queries = QuerySets(counts, hidden_size, query_init, view_by_visual_tokens)
        self.out_dim = hidden_size

    def queries_for(self, num_visual_tokens: int) -> torch.Tensor:
        """The ``[n, hidden]`` query set that reads ``num_visual_tokens`` visual tokens."""
        if self.queries is None:
            raise ValueError("this encoder has no queries (with_queries=False)")
        return self.queries.for_visual_tokens(num_visual_tokens)

    def forward(
        self, pixel_values: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, S, S] -> [B, n, hidden]``; with ``return_attention`` also the attention of
        the output tokens over the visual tokens, ``[B, layers, heads, n, m]`` (computed by the
        eager kernel whatever ``attn_backend`` is)."""
        visual = self.tokenizer(pixel_values)
        batch, num_visual, _ = visual.shape
        layout: tuple[tuple[str, int], ...] = ((VISUAL, num_visual),)
        sequence, outputs_start, positions = visual, 0, None
        if self.queries is not None:
            queries = self.queries_for(num_visual).to(visual.dtype)
            sequence = torch.cat([visual, queries.expand(batch, -1, -1)], dim=1)
            layout += ((QUERY, queries.shape[0]),)
            outputs_start = num_visual
            if self.query_positions == "restart":
                positions = torch.cat([torch.arange(num_visual), torch.arange(queries.shape[0])])
                positions = positions.to(visual.device)[None]
        backend = "eager" if return_attention else self.attn_backend
        mask = compile_mask(self.mask_spec, layout, backend, sequence.dtype, sequence.device)
        if not return_attention:
            return self.lm(sequence, mask, positions)[:, outputs_start:]
        hidden, attentions = self.lm(sequence, mask, positions, return_attention=True)
        over_visual = torch.stack([p[..., outputs_start:, :num_visual] for p in attentions], 1)
        return hidden[:, outputs_start:], over_visual

    def num_tokens(self, view_size: int) -> int:
        visual_tokens = self.tokenizer.num_tokens(view_size)
        if self.queries is None:
            return visual_tokens
        return self.queries_for(visual_tokens).shape[0]

    def roles(self) -> dict[str, str]:
        """``vision_tokenizer`` (SAM + compressor, frozen in v2 stage 2), ``lm_encoder`` and,
        with queries, ``queries``."""
        own = {"vision_tokenizer": "tokenizer", "lm_encoder": "lm"}
        if self.queries is not None:
            own["queries"] = "queries"
        return {**super().roles(), **own}

    def weight_sources(self) -> dict[str, WeightSource]:
        """The tokenizer's, and ``qwen2``: a transformers Qwen2 folder for the LM encoder (its
        token embedding and LM head unused)."""
        return {**super().weight_sources(), "qwen2": WeightSource(qwen2_from_transformers, "lm")}

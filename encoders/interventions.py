"""Inference-time interventions on an encoder's output tokens, before the projector and decoder.

Public analyses of DeepSeek-OCR 2 probe what the causal-flow queries carry by disturbing them
on their way to the decoder: permuting them, swapping their halves, duplicating the first
half over the second, or giving a page another page's tokens. Each intervention here is an
exact re-indexing of the ``[B, N, C]`` output, along the tokens or along the batch.

The intervened encoder *is* the inner encoder (same class, same parameter names, so released
and trained weights load unchanged and its roles and freeze prefixes still match), with an
:class:`Intervention` attached as its ``intervention`` child (no parameters, no buffers) and
run by a forward hook.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from encoders.base import VisionEncoder
from zoo.registry import create_encoder, register_encoder

INTERVENTIONS = ("shuffle", "swap_halves", "repeat_first_half", "other_image")


class Intervention(nn.Module):
    """One named re-indexing of encoder outputs ``[B, N, ...]``; see :data:`INTERVENTIONS`.

    With ``n = N // 2``: ``shuffle`` applies one fixed random permutation of the ``N`` tokens
    (drawn from ``seed``, the same for every view with ``N`` tokens); ``swap_halves`` swaps the
    first ``n`` tokens with the last ``n`` (a middle token of an odd ``N`` stays); applying it
    twice is the identity; ``repeat_first_half`` replaces the last ``n`` tokens by the first
    ``n``; ``other_image`` gives view ``i`` the tokens of view ``i - 1`` of the batch (view 0
    those of the last; crops of one page are views of one batch too; a batch of one view
    passes unchanged, with a warning).
    """

    def __init__(self, name: str, seed: int = 0) -> None:
        super().__init__()
        if name not in INTERVENTIONS:
            raise ValueError(f"unknown intervention {name!r}; valid: {list(INTERVENTIONS)}")
        self.name = name
        self.seed = seed

    def token_order(self, num_tokens: int) -> torch.Tensor:
        """Output token ``j`` is input token ``order[j]`` (for the token-axis interventions)."""
        half = num_tokens // 2
        index = torch.arange(num_tokens)
        if self.name == "shuffle":
            return torch.randperm(num_tokens, generator=torch.Generator().manual_seed(self.seed))
        if self.name == "swap_halves":
            return torch.cat(
                [index[num_tokens - half :], index[half : num_tokens - half], index[:half]]
            )
        return torch.cat([index[: num_tokens - half], index[:half]])  # repeat_first_half

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, ...]`` tokens, re-indexed."""
        if self.name == "other_image":
            if tokens.shape[0] < 2:
                warnings.warn(
                    "intervention 'other_image' got a batch of one view: no other image to "
                    "take tokens from, so they pass unchanged; use batches of >= 2 pages",
                    stacklevel=2,
                )
            return tokens.roll(1, dims=0)
        return tokens[:, self.token_order(tokens.shape[1]).to(tokens.device)]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, seed={self.seed}"


def _apply_intervention(encoder: VisionEncoder, _inputs: Any, output: Any) -> Any:
    """Forward hook: intervene on the tokens (the output, or its first element)."""
    if isinstance(output, tuple):
        return (encoder.intervention(output[0]), *output[1:])
    return encoder.intervention(output)


def attach_intervention(encoder: VisionEncoder, name: str, seed: int = 0) -> VisionEncoder:
    """Make a built (for example trained and loaded) ``encoder`` re-index its output tokens with
    :class:`Intervention` ``(name, seed)``; returns the same encoder."""
    if hasattr(encoder, "intervention"):
        raise ValueError(f"the encoder already has an intervention: {encoder.intervention}")
    encoder.intervention = Intervention(name, seed)
    encoder.register_forward_hook(_apply_intervention)
    return encoder


@register_encoder("intervened")
def intervened(
    intervention: str, inner: str = "causal_flow", seed: int = 0, **inner_kwargs: Any
) -> VisionEncoder:
    """Any encoder with an inference-time intervention on its output tokens (shuffle, swap...).

    Builds registered encoder ``inner`` from ``inner_kwargs`` and re-indexes its outputs with
    :class:`Intervention` ``(intervention, seed)``. The inner encoder's keyword arguments sit
    beside these three, so a config only renames ``encoder.name`` and adds
    ``encoder.inner``/``encoder.intervention``. Returns the inner encoder itself (parameter
    names unchanged); other outputs than the tokens (e.g. attention maps) are left as they are.
    """
    return attach_intervention(create_encoder(inner, **inner_kwargs), intervention, seed)

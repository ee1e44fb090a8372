"""The contract every language decoder of the zoo fulfils.

Besides ``embed`` and ``forward``, a decoder is a :class:`~zoo.model.component.Component`: it
declares its undecayed parameters, checkpoints its layers, lists public weights it can start
from, rebuilds its derived buffers and names the roles stages freeze.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from decoders.attention import AttentionObserver
from zoo.model.component import Component


@dataclass
class DecoderOutput:
    """What a decoder forward returns.

    ``past_key_values`` is the decoder's own cache object (opaque to callers; pass it back in);
    ``aux_loss`` is the MoE load-balancing loss of this forward, ``None`` for dense decoders.
    """

    logits: torch.Tensor
    past_key_values: object | None = None
    aux_loss: torch.Tensor | None = None


class LanguageDecoder(Component):
    """A causal LM that reads embeddings, so image embeddings can be spliced in first."""

    hidden_size: int
    vocab_size: int

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Token embeddings ``[B, T, hidden_size]``."""
        raise NotImplementedError

    def observe_attention(self, observer: AttentionObserver) -> AbstractContextManager[None]:
        """A context within which every attention layer hands its probabilities ``[B, H, T,
        S]`` to ``observer``, in layer order (diagnostics of what the decoder reads)."""
        raise NotImplementedError(f"{type(self).__name__} does not hand out its attention")

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: object | None = None,
        use_cache: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
    ) -> DecoderOutput:  # pragma: no cover - abstract
        """``attention_mask`` is a ``[B, T_past + T]`` padding mask (1 = real token).

        ``logits_to_keep``: ``0`` all positions; ``n`` the last ``n``; a boolean ``[B, T]``
        tensor the marked positions only, as ``[N, vocab]`` logits.
        """
        raise NotImplementedError

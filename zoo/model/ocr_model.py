"""OCRModel: encoder -> projector -> decoder, with image embeddings spliced into the prompt.

The data path of one page: pixels of each view -> ``encoder`` tokens -> ``projector`` to the
decoder width -> ``assemble_image_embeddings`` lays the views out in the official order (newline
and view-separator tokens included) -> those vectors replace the ``<image>`` placeholder
positions of the prompt embeddings -> ``decoder``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from decoders.base import LanguageDecoder
from decoders.generation import generate as generate_tokens
from encoders.base import VisionEncoder
from zoo.inputs.image_layout import assemble_image_embeddings, num_image_tokens
from zoo.inputs.preprocessing import ImageBatch, ViewMode, get_view_mode, preprocess
from zoo.inputs.processor import IGNORE_INDEX, predicted_labels, predicting_positions
from zoo.io.save import save_pretrained as save_folder
from zoo.model.component import Component, merge_declarations

ViewModeSpec = ViewMode | str | Mapping[str, object] | None


@dataclass
class OCROutput:
    """Forward result: ``loss`` is next-token cross-entropy over labelled positions only."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    past_key_values: object | None = None


class OCRModel(Component):
    """A vision encoder, a projector and a language decoder composed into one OCR model.

    ``image_mode`` (a :class:`ViewMode` or its name) fixes how pages are cut into views and
    laid out as tokens; v1 modes lay out rows with a learned newline vector, v2 does not.
    As a :class:`Component` it gathers its encoder's and decoder's declarations and adds its
    own parts (projector, layout vectors).
    """

    # The build_model config that made this model (set by build_model), which save_pretrained
    # writes so that from_pretrained can rebuild it.
    build_config: dict[str, object] | None = None

    def __init__(
        self,
        encoder: VisionEncoder,
        projector: nn.Module,
        decoder: LanguageDecoder,
        image_token_id: int,
        image_mode: ViewModeSpec = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.decoder = decoder
        self.image_token_id = image_token_id
        self.image_mode = get_view_mode(image_mode)
        width = decoder.hidden_size
        # Spelled as in the released checkpoints' ``view_seperator``; renamed here for readers.
        self.view_separator = nn.Parameter(torch.randn(width) * width**-0.5)
        self.image_newline = (
            nn.Parameter(torch.randn(width) * width**-0.5) if self.image_mode.newlines else None
        )

    def layout_vectors(self) -> list[str]:
        """Names of the learned vectors laid out between image tokens (separator, newline)."""
        return [n for n in ("view_separator", "image_newline") if getattr(self, n) is not None]

    def no_weight_decay(self) -> set[str]:
        """The encoder's and decoder's, and the layout vectors (learned tokens)."""
        return super().no_weight_decay() | set(self.layout_vectors())

    def roles(self) -> dict[str, str]:
        """The encoder's and decoder's roles, and ``encoder``, ``projector``, ``decoder`` and
        each layout vector (``view_separator``; ``image_newline`` in v1 modes)."""
        own = {name: name for name in ("encoder", "projector", "decoder", *self.layout_vectors())}
        return merge_declarations([("OCRModel", own), ("a part", super().roles())], "role")

    def _mode(self, mode: ViewModeSpec) -> ViewMode:
        """``mode`` (default: the model's); refused when its token layout is not the model's."""
        chosen = self.image_mode if mode is None else get_view_mode(mode)
        if chosen.newlines != self.image_mode.newlines:
            raise ValueError(
                f"view mode {chosen.name!r} {'uses' if chosen.newlines else 'has no'} newline "
                f"tokens but this model was built for mode {self.image_mode.name!r}"
            )
        return chosen

    def preprocess(self, images: Sequence[Image.Image], mode: ViewModeSpec = None) -> ImageBatch:
        """The views of ``images`` in ``mode`` (default: the model's view mode)."""
        return preprocess(images, self._mode(mode))

    def num_image_tokens(self, width: int, height: int, mode: ViewModeSpec = None) -> int:
        """Placeholder tokens a ``width x height`` page takes in ``mode``."""
        return num_image_tokens(width, height, self._mode(mode))

    def encode(self, images: ImageBatch) -> list[torch.Tensor]:
        """Per image, the ``[T_i, hidden]`` embeddings that replace its placeholder tokens."""
        # pixels in the model's precision (a model loaded in bfloat16 gets float32 views)
        images = images.to(dtype=self.view_separator.dtype)
        global_tokens = self.encode_views(images.global_views)
        local_tokens = None
        if images.local_views is not None and images.local_views.shape[0] > 0:
            local_tokens = self.encode_views(images.local_views)
        return assemble_image_embeddings(
            global_tokens, local_tokens, images.crop_grids, self.view_separator, self.image_newline
        )

    def encode_views(self, views: torch.Tensor) -> torch.Tensor:
        """Projected tokens ``[N, T, hidden]`` of ``views`` ``[N, 3, H, W]``.

        CPU inference encodes one view at a time: for the released model's 6 crops in bfloat16
        that was as fast as the batch here, and the process's memory grew by 0.06 GiB instead of
        0.61. An encoder with an intervention (``encoders/interventions.py``, which may mix
        views of the batch) always gets the whole batch.
        """
        one_by_one = (
            views.device.type == "cpu"
            and not torch.is_grad_enabled()
            and not hasattr(self.encoder, "intervention")
        )
        if one_by_one and views.shape[0] > 1:
            return torch.cat([self.projector(self.encoder(view)) for view in views.split(1)])
        return self.projector(self.encoder(views))

    def embed_inputs(
        self, input_ids: torch.Tensor, images: ImageBatch | None = None
    ) -> torch.Tensor:
        """Token embeddings with the image embeddings written over the placeholder positions."""
        embeds = self.decoder.embed(input_ids)
        placeholders = input_ids == self.image_token_id
        n_placeholders = int(placeholders.sum())
        if images is None:
            if n_placeholders:
                raise ValueError(
                    f"input_ids hold {n_placeholders} image placeholder tokens "
                    f"(id {self.image_token_id}) but no images were given"
                )
            return embeds
        features = torch.cat(self.encode(images)).to(embeds.dtype)
        if features.shape[0] != n_placeholders:
            raise ValueError(
                f"the images give {features.shape[0]} embeddings but input_ids hold "
                f"{n_placeholders} placeholder tokens (id {self.image_token_id}); build prompts "
                "with the processor so each image gets num_image_tokens placeholders"
            )
        return embeds.masked_scatter(placeholders.unsqueeze(-1), features)

    def forward(
        self,
        input_ids: torch.Tensor,
        images: ImageBatch | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: object | None = None,
        use_cache: bool = False,
        logits: Literal["all", "labelled"] = "all",
    ) -> OCROutput:
        """Next-token logits and, with ``labels``, the loss over the labelled positions.

        ``logits="labelled"`` (training) runs the LM head only on the positions that predict a
        label and returns those rows as ``[N, vocab]``: over a 129k vocabulary the head is the
        largest matmul of a short-answer step, and the loss is the same.
        """
        if logits not in ("all", "labelled"):
            raise ValueError(f"logits must be 'all' or 'labelled', got {logits!r}")
        if logits == "labelled" and labels is None:
            raise ValueError("logits='labelled' needs labels")
        embeds = self.embed_inputs(input_ids, images)
        keep: torch.Tensor | int = 0
        if logits == "labelled":
            keep = predicting_positions(labels)
        out = self.decoder(
            embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            logits_to_keep=keep,
        )
        loss = None
        if logits == "labelled":
            loss = F.cross_entropy(out.logits.float(), predicted_labels(labels))
        elif labels is not None:
            loss = F.cross_entropy(
                out.logits[:, :-1].flatten(0, 1).float(),
                labels[:, 1:].flatten(),
                ignore_index=IGNORE_INDEX,
            )
        return OCROutput(out.logits, loss, out.aux_loss, out.past_key_values)

    def save_pretrained(self, directory: str | Path, layout: str = "zoo") -> Path:
        """Write the model to ``directory`` in ``layout`` (``zoo``, ``official`` or
        ``transformers``; see :func:`zoo.io.save.save_pretrained`)."""
        return save_folder(self, directory, layout)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        images: ImageBatch | None = None,
        attention_mask: torch.Tensor | None = None,
        **generation_kwargs,
    ) -> torch.Tensor:
        """New token ids after each (left-padded) prompt; see ``decoders.generation.generate``."""
        embeds = self.embed_inputs(input_ids, images)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        generation_kwargs.setdefault("prompt_ids", input_ids)
        return generate_tokens(self.decoder, embeds, attention_mask, **generation_kwargs)

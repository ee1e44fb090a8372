"""OCRProcessor: pages + prompts (+ answers) -> the padded tensors an :class:`OCRModel` reads.

A prompt holds one ``<image>`` marker per page; the processor expands it to exactly
``num_image_tokens(width, height, mode)`` placeholder ids, so the model's image embeddings
fill them one to one. Sequences start with the BOS token, as the official ``plain`` prompt
format does; an answer follows the prompt directly and ends with EOS. Labels are ``-100``
everywhere except on answer and EOS tokens, so the loss only scores what the model must write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from PIL import Image

from zoo.inputs.image_layout import num_image_tokens
from zoo.inputs.preprocessing import ViewMode, get_view_mode, preprocess
from zoo.inputs.text_tokenizer import IMAGE_TOKEN, TextTokenizer

IGNORE_INDEX = -100


def predicting_positions(labels: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, T]``: the positions whose next token is labelled, where the loss reads the
    logits (an answer token is written from the position before it)."""
    predicting = torch.zeros_like(labels, dtype=torch.bool)
    predicting[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return predicting


def predicted_labels(labels: torch.Tensor) -> torch.Tensor:
    """``[N]``: the labels the :func:`predicting_positions` predict, in row-major order."""
    return labels[:, 1:][labels[:, 1:] != IGNORE_INDEX]


class OCRProcessor:
    """Turns pages and prompts into ``input_ids``, ``attention_mask``, ``labels`` and views."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        image_mode: ViewMode | str | Mapping[str, object] | None = None,
        max_answer_tokens: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.mode = get_view_mode(image_mode)
        self.max_answer_tokens = max_answer_tokens

    def prompt_ids(self, prompt: str, image_size: tuple[int, int] | None) -> list[int]:
        """BOS + ``prompt`` with its ``<image>`` marker expanded for a page of ``image_size``."""
        n_markers = prompt.count(IMAGE_TOKEN)
        expected = 0 if image_size is None else 1
        if n_markers != expected:
            raise ValueError(
                f"prompt {prompt!r} has {n_markers} {IMAGE_TOKEN} markers; expected {expected} "
                f"({'one page' if expected else 'no page'} given)"
            )
        ids = [self.tokenizer.bos_id]
        if image_size is None:
            return ids + self.tokenizer.encode(prompt)
        before, after = prompt.split(IMAGE_TOKEN)
        n_tokens = num_image_tokens(*image_size, self.mode)
        return (
            ids
            + self.tokenizer.encode(before)
            + [self.tokenizer.image_id] * n_tokens
            + self.tokenizer.encode(after)
        )

    def answer_ids(self, answer: str) -> list[int]:
        """``answer`` + EOS, cut to ``max_answer_tokens`` (EOS kept) when that is set."""
        ids = self.tokenizer.encode(answer)
        if self.max_answer_tokens is not None:
            ids = ids[: self.max_answer_tokens - 1]
        return ids + [self.tokenizer.eos_id]

    def __call__(
        self,
        images: Sequence[Image.Image] | None,
        prompts: Sequence[str],
        answers: Sequence[str] | None = None,
        padding_side: Literal["right", "left"] = "right",
    ) -> dict[str, Any]:
        """A batch: one page per prompt (or none), answers for training, left padding to generate.

        Returns ``input_ids``, ``attention_mask`` and ``labels`` (``[B, T]`` long tensors) and
        ``images`` (an :class:`ImageBatch`, or ``None`` without pages).
        """
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if images is not None and len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts; give one each")
        if answers is not None and len(answers) != len(prompts):
            raise ValueError(f"{len(answers)} answers for {len(prompts)} prompts; give one each")
        if not prompts:
            raise ValueError("the processor needs at least one prompt")

        batch_images = None if images is None else preprocess(images, self.mode)
        sizes = [None] * len(prompts) if images is None else [im.size for im in images]
        sequences, label_rows = [], []
        for i, (prompt, size) in enumerate(zip(prompts, sizes, strict=True)):
            prompt_part = self.prompt_ids(prompt, size)
            answer_part = [] if answers is None else self.answer_ids(answers[i])
            sequences.append(prompt_part + answer_part)
            label_rows.append([IGNORE_INDEX] * len(prompt_part) + answer_part)

        length = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), length), self.tokenizer.pad_id, dtype=torch.long)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        attention_mask = torch.zeros_like(input_ids)
        for row, (ids, label) in enumerate(zip(sequences, label_rows, strict=True)):
            span = slice(0, len(ids)) if padding_side == "right" else slice(length - len(ids), None)
            input_ids[row, span] = torch.tensor(ids)
            labels[row, span] = torch.tensor(label)
            attention_mask[row, span] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "images": batch_images,
        }

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of generated ids, stopping at the first EOS and dropping padding."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if self.tokenizer.eos_id in ids:
            ids = ids[: ids.index(self.tokenizer.eos_id)]
        return self.tokenizer.decode([i for i in ids if i != self.tokenizer.pad_id])

"""Running a trained OCR model over pages: loading it from any checkpoint, and greedy
transcription of a batch of pages."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from zoo.inputs.processor import OCRProcessor
from zoo.io.load import from_pretrained, load_processor
from zoo.model.ocr_model import OCRModel


def load_inference_model(path: Path | str) -> tuple[OCRModel, OCRProcessor]:
    """The model and processor of a Lightning ``.ckpt`` written by ``zoo.train``, or of a
    checkpoint directory (released, transformers- or zoo-saved) read by :mod:`zoo.io.load`."""
    path = Path(path)
    if path.is_dir():
        return from_pretrained(path), load_processor(path)
    if path.is_file():
        from lightning_modules.ocr_module import OCRLightningModule

        module = OCRLightningModule.load_from_checkpoint(
            path, map_location="cpu", weights_only=True
        )
        return module.model, module.processor
    raise FileNotFoundError(
        f"checkpoint {path}: no such file or directory; expected a Lightning .ckpt of zoo.train "
        "or a checkpoint directory"
    )


@torch.no_grad()
def transcribe(
    model: OCRModel,
    processor: OCRProcessor,
    images: Sequence[Image.Image],
    prompt: str,
    max_new_tokens: int,
    no_repeat_ngram_size: int = 0,
) -> list[str]:
    """Greedy answers of the model for a batch of pages (prompts left-padded together)."""
    if not images:
        return []
    parameter = next(model.parameters())
    batch = processor(list(images), [prompt] * len(images), padding_side="left")
    tokenizer = processor.tokenizer
    generated = model.generate(
        batch["input_ids"].to(parameter.device),
        images=batch["images"].to(parameter.device, dtype=parameter.dtype),
        attention_mask=batch["attention_mask"].to(parameter.device),
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        no_repeat_ngram_size=no_repeat_ngram_size,
    )
    return [processor.decode(row) for row in generated]

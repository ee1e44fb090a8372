"""Running a trained OCR model over pages: loading it, greedy transcription, and the Lightning
pieces ``zoo.evaluate`` uses (a predict-only module and a writer that stores each page's
markdown as soon as its batch is done, so an interrupted run can resume)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from lightning_modules.page_data import FREE_OCR_PROMPT, MARKDOWN_PROMPT
from zoo.grounding import strip_grounding
from zoo.model import OCRModel
from zoo.processor import OCRProcessor
from zoo.tokenizer import IMAGE_TOKEN

# The official prompts of both releases.
PROMPT_PRESETS = {"markdown": MARKDOWN_PROMPT, "free": FREE_OCR_PROMPT}


def resolve_prompt(prompt: str) -> str:
    """A preset name (``markdown``, ``free``) or a prompt text; a text without the ``<image>``
    marker gets it in front, as the official prompts have it."""
    prompt = PROMPT_PRESETS.get(prompt, prompt)
    return prompt if IMAGE_TOKEN in prompt else f"{IMAGE_TOKEN}\n{prompt}"


def load_inference_model(path: Path | str) -> tuple[OCRModel, OCRProcessor]:
    """The model and processor of a Lightning ``.ckpt`` written by ``zoo.train``, or of a
    checkpoint directory (released, transformers- or zoo-saved) read by ``zoo.checkpoint``."""
    path = Path(path)
    if path.is_dir():
        from zoo.checkpoint import from_pretrained, load_processor  # only this path needs it

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


class OCRPredictModule(L.LightningModule):
    """Predict-only wrapper: a batch ``{"names", "images"}`` -> ``[(name, answer), ...]``."""

    def __init__(
        self,
        model: OCRModel,
        processor: OCRProcessor,
        prompt: str = "markdown",
        max_new_tokens: int = 8192,
        no_repeat_ngram_size: int = 20,
    ) -> None:
        super().__init__()
        self.model, self.processor = model.eval(), processor
        self.prompt = resolve_prompt(prompt)
        self.max_new_tokens, self.no_repeat_ngram_size = max_new_tokens, no_repeat_ngram_size

    def predict_step(self, batch: dict[str, list], batch_idx: int) -> list[tuple[str, str]]:
        answers = transcribe(
            self.model,
            self.processor,
            batch["images"],
            self.prompt,
            self.max_new_tokens,
            self.no_repeat_ngram_size,
        )
        return list(zip(batch["names"], answers, strict=True))


def markdown_path(out_dir: Path, image_name: str) -> Path:
    """Where the markdown of a page image goes: ``out_dir / <image stem>.md``."""
    return Path(out_dir) / f"{Path(image_name).stem}.md"


class MarkdownWriter(BasePredictionWriter):
    """Writes each page's markdown (grounding tags removed) when its batch ends."""

    def __init__(self, out_dir: Path | str) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: list[tuple[str, str]],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        for name, answer in prediction:
            path = markdown_path(self.out_dir, name)
            partial = path.with_suffix(".md.partial")
            partial.write_text(strip_grounding(answer), encoding="utf-8")
            partial.replace(path)  # a page is either absent or complete

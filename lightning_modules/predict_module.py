"""The Lightning pieces ``zoo.evaluate`` runs a model with: a predict-only module and a writer
that stores each page's markdown as soon as its batch is done, so an interrupted run can
resume."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from zoo.inputs.grounding import strip_grounding
from zoo.inputs.processor import OCRProcessor
from zoo.inputs.prompts import resolve_prompt
from zoo.model.inference import transcribe
from zoo.model.ocr_model import OCRModel


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

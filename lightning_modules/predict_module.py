"""The Lightning pieces ``zoo.evaluate`` runs a model with: a predict-only module and a writer
that stores each page's markdown as soon as its batch is done, so an interrupted run can
resume."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from zoo.eval.repetition import write_generation_record
from zoo.inputs.processor import OCRProcessor
from zoo.io.atomic import write_text_atomic
from zoo.model.inference import GenerationSettings, Transcription, transcribe
from zoo.model.ocr_model import OCRModel


class OCRPredictModule(L.LightningModule):
    """Predict-only wrapper: a batch ``{"names", "images"}`` -> ``[(name, transcription), ...]``."""

    def __init__(
        self, model: OCRModel, processor: OCRProcessor, settings: GenerationSettings
    ) -> None:
        super().__init__()
        self.model, self.processor, self.settings = model.eval(), processor, settings

    def predict_step(
        self, batch: dict[str, list], batch_idx: int
    ) -> list[tuple[str, Transcription]]:
        answers = transcribe(self.model, self.processor, batch["images"], self.settings)
        return list(zip(batch["names"], answers, strict=True))


def markdown_path(out_dir: Path, image_name: str) -> Path:
    """Where the markdown of a page image goes: ``out_dir / <image stem>.md``."""
    return Path(out_dir) / f"{Path(image_name).stem}.md"


class MarkdownWriter(BasePredictionWriter):
    """Writes each page's post-processed markdown when its batch ends, and records whether its
    answer ran into the token limit (:func:`zoo.eval.repetition.write_generation_record`)."""

    def __init__(self, out_dir: Path | str) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: list[tuple[str, Transcription]],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        for name, answer in prediction:
            path = markdown_path(self.out_dir, name)
            write_generation_record(path, answer.hit_token_limit)
            write_text_atomic(path, answer.markdown)  # a page is either absent or complete

"""The ``omnidocbench`` datamodule: a benchmark folder (ground-truth JSON + ``images/``) as
training pages with reading-order markdown, and as prediction inputs for ``zoo.evaluate``."""

from __future__ import annotations

import random
from pathlib import Path

from torch.utils.data import DataLoader

from lightning_modules.page_datamodule import PageDataModule
from zoo.data.omnidocbench_pages import load_benchmark_pages
from zoo.data.page_datasets import (
    ImageFileDataset,
    ImagePredictionDataset,
    collate_predictions,
    image_size,
)
from zoo.data.page_markdown import check_target, page_answer
from zoo.data.workers import ExitWithParent
from zoo.eval.omnidocbench import GroundTruthPage
from zoo.inputs.processor import OCRProcessor
from zoo.inputs.prompts import MARKDOWN_PROMPT
from zoo.registry import register_datamodule


@register_datamodule("omnidocbench")
class OmniDocBenchDataModule(PageDataModule):
    """OmniDocBench pages (JSON + images) with reading-order markdown, to fine-tune or evaluate."""

    def __init__(
        self,
        processor: OCRProcessor,
        root: str,
        ground_truth: str | None = None,
        images: str = "images",
        page_filter: dict | None = None,
        target: str = "markdown",
        val_pages: int = 0,
        seed: int = 0,
        batch_size: int = 1,
        num_workers: int = 0,
        prompt: str = MARKDOWN_PROMPT,
        bucket_by_length: bool = True,
        bucket_batches: int = 32,
    ) -> None:
        super().__init__(
            processor, batch_size, num_workers, prompt, bucket_by_length, bucket_batches
        )
        self.pages = load_benchmark_pages(root, ground_truth, page_filter)
        if not self.pages:
            raise ValueError(f"root={root}: no page matches page_filter={page_filter}")
        if not 0 <= val_pages < len(self.pages):
            raise ValueError(
                f"val_pages={val_pages}: expected 0 (validate on the training pages) up to "
                f"{len(self.pages) - 1} for {len(self.pages)} pages"
            )
        self.image_dir = Path(root) / images
        entries = [self._entry(page, check_target(target)) for page in self.pages]
        held_out = set(random.Random(seed).sample(range(len(entries)), val_pages))
        train = [e for i, e in enumerate(entries) if i not in held_out]
        val = [e for i, e in enumerate(entries) if i in held_out] or train
        self.train_set, self.val_set = ImageFileDataset(train), ImageFileDataset(val)

    def _entry(self, page: GroundTruthPage, target: str) -> tuple[Path, str]:
        """Image path and answer; a grounded answer needs the page size from the image header
        (an unreadable image keeps the plain markdown, and is skipped when loaded)."""
        path = self.image_dir / page.image_name
        size = image_size(path) if target != "markdown" else None
        if size is None:
            return path, page_answer(page.blocks, "markdown", (0, 0), page.relations)
        return path, page_answer(page.blocks, target, size, page.relations)

    def prediction_dataset(self) -> ImagePredictionDataset:
        """Every selected page as ``(image name, image)``, in ground-truth order."""
        return ImagePredictionDataset([self.image_dir / p.image_name for p in self.pages])

    def predict_dataloader(self) -> DataLoader:
        """Batches of ``{"names": [...], "images": [...]}``; unreadable pages are left out."""
        return DataLoader(
            self.prediction_dataset(),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_predictions,
            worker_init_fn=ExitWithParent(),
        )

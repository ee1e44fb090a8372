"""The ``synthetic_pages`` datamodule: layout-engine pages rendered on the fly, the zero-setup
default data of ``zoo.train``."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from lightning_modules.page_datamodule import PageDataModule
from zoo.data.layout_engine import LayoutStyle, PagePlan, paint, plan_page
from zoo.data.page_datasets import PageSample
from zoo.data.page_markdown import check_target, page_answer
from zoo.inputs.processor import OCRProcessor
from zoo.inputs.prompts import MARKDOWN_PROMPT
from zoo.registry import register_datamodule


class SyntheticPageDataset(Dataset):
    """``length`` pages of the deterministic stream ``seed``; answers in the ``target`` form."""

    def __init__(
        self, seed: int, length: int, page_size: int, style: dict[str, Any], target: str
    ) -> None:
        LayoutStyle(**style)  # fail at construction on a bad style, not in a worker
        self.seed, self.length, self.page_size = seed, length, page_size
        self.style, self.target = style, check_target(target)

    def __len__(self) -> int:
        return self.length

    def _plan(self, index: int) -> PagePlan:
        if not 0 <= index < self.length:
            raise IndexError(f"page {index} out of range for {self.length} synthetic pages")
        return plan_page(self.seed, index, self.page_size, **self.style)

    def _answer(self, plan: PagePlan) -> str:
        return page_answer(plan.blocks, self.target, (self.page_size, self.page_size))

    def describe(self, index: int) -> tuple[str, tuple[int, int]]:
        """Answer and size of a page, from its layout alone (no pixels)."""
        return self._answer(self._plan(index)), (self.page_size, self.page_size)

    def __getitem__(self, index: int) -> PageSample:
        plan = self._plan(index)
        return PageSample(paint(plan), self._answer(plan))


@register_datamodule("synthetic_pages")
class SyntheticPagesDataModule(PageDataModule):
    """Synthetic multi-column pages (headers, side bars, figures, tables, formulas), on the fly."""

    def __init__(
        self,
        processor: OCRProcessor,
        seed: int = 0,
        num_train: int = 10_000,
        num_val: int = 16,
        val_seed: int | None = None,
        page_size: int = 1024,
        style: dict[str, Any] | None = None,
        target: str = "markdown",
        batch_size: int = 4,
        num_workers: int = 0,
        prompt: str = MARKDOWN_PROMPT,
        bucket_by_length: bool = False,
        bucket_batches: int = 32,
    ) -> None:
        super().__init__(
            processor, batch_size, num_workers, prompt, bucket_by_length, bucket_batches
        )
        style = dict(style or {})
        # Validation pages come from stream -1 - seed, which no training seed (>= 0) reaches,
        # unless val_seed fixes them (a study scores every run on the same pages).
        if val_seed is not None and val_seed >= 0:
            raise ValueError(
                f"val_seed must be negative (training streams are >= 0), got {val_seed}"
            )
        val_stream = -1 - seed if val_seed is None else val_seed
        self.train_set = SyntheticPageDataset(seed, num_train, page_size, style, target)
        self.val_set = SyntheticPageDataset(val_stream, num_val, page_size, style, target)

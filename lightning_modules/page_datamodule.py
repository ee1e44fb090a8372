"""The base of the page datamodules: collation through the :class:`OCRProcessor`, optional
length bucketing, and the dataloaders.

Pages of a batch may have different sizes and so a different number of crops; the processor
stacks them into one :class:`~zoo.inputs.preprocessing.ImageBatch`, so nothing here pads images.
"""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from zoo.data.page_datasets import LengthBucketBatchSampler, PageSample
from zoo.data.workers import ExitWithParent
from zoo.inputs.image_layout import num_image_tokens
from zoo.inputs.processor import OCRProcessor
from zoo.inputs.prompts import MARKDOWN_PROMPT


class PageDataModule(L.LightningDataModule):
    """Base of the page datamodules: subclasses set ``train_set`` and ``val_set`` (datasets of
    :class:`PageSample` with a ``describe(index)`` method); this class batches them."""

    train_set: Dataset
    val_set: Dataset

    def __init__(
        self,
        processor: OCRProcessor,
        batch_size: int = 4,
        num_workers: int = 0,
        prompt: str = MARKDOWN_PROMPT,
        bucket_by_length: bool = False,
        bucket_batches: int = 32,
    ) -> None:
        super().__init__()
        if "<image>" not in prompt:
            raise ValueError(f"prompt {prompt!r} needs an <image> marker, e.g. {MARKDOWN_PROMPT!r}")
        self.processor, self.prompt = processor, prompt
        self.batch_size, self.num_workers = batch_size, num_workers
        self.bucket_by_length, self.bucket_batches = bucket_by_length, bucket_batches

    def collate(self, pages: list[PageSample]) -> dict:
        """Processor tensors of a batch; pages may differ in size and number of crops."""
        return self.processor(
            [p.image for p in pages], [self.prompt] * len(pages), [p.markdown for p in pages]
        )

    def token_length(self, markdown: str, size: tuple[int, int] | None) -> int:
        """Answer tokens plus image tokens of a page (image tokens 0 when the size is unknown)."""
        image_tokens = 0 if size is None else num_image_tokens(*size, self.processor.mode)
        return len(self.processor.answer_ids(markdown)) + image_tokens

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        common = {
            "num_workers": self.num_workers,
            "collate_fn": self.collate,
            "persistent_workers": self.num_workers > 0,
            "worker_init_fn": ExitWithParent(),
        }
        if not self.bucket_by_length:
            return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, **common)
        sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        batch_sampler = LengthBucketBatchSampler(
            sampler,
            self.batch_size,
            drop_last=False,
            length_of=lambda index: self.token_length(*dataset.describe(index)),
            bucket_batches=self.bucket_batches,
        )
        return DataLoader(dataset, batch_sampler=batch_sampler, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

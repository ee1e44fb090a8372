"""The ``synthetic_pages`` datamodule: pages rendered on the fly, the zero-setup default data."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from lightning_modules.synthetic_pages import SyntheticPage, render_page
from zoo.processor import OCRProcessor
from zoo.registry import register_datamodule

FREE_OCR_PROMPT = "<image>\nFree OCR."


class SyntheticPageDataset(Dataset):
    """``length`` pages of the deterministic stream ``seed``."""

    def __init__(self, seed: int, length: int, **render_kwargs) -> None:
        self.seed, self.length, self.render_kwargs = seed, length, render_kwargs

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> SyntheticPage:
        return render_page(self.seed, index, **self.render_kwargs)


@register_datamodule("synthetic_pages")
class SyntheticPagesDataModule(L.LightningDataModule):
    """Synthetic one- or two-column pages with markdown ground truth, rendered on the fly."""

    def __init__(
        self,
        processor: OCRProcessor,
        seed: int = 0,
        num_train: int = 10_000,
        num_val: int = 16,
        batch_size: int = 4,
        num_workers: int = 0,
        page_size: int = 1024,
        max_columns: int = 2,
        lines_per_column: int = 3,
        prompt: str = FREE_OCR_PROMPT,
    ) -> None:
        super().__init__()
        self.processor = processor
        self.batch_size, self.num_workers, self.prompt = batch_size, num_workers, prompt
        render = {
            "page_size": page_size,
            "max_columns": max_columns,
            "lines_per_column": lines_per_column,
        }
        # Validation pages come from another stream, so they are never seen in training.
        self.train_set = SyntheticPageDataset(seed, num_train, **render)
        self.val_set = SyntheticPageDataset(seed + 1, num_val, **render)

    def collate(self, pages: list[SyntheticPage]) -> dict:
        return self.processor(
            [p.image for p in pages], [self.prompt] * len(pages), [p.markdown for p in pages]
        )

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

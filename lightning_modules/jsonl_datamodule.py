"""The ``jsonl`` datamodule: a user's own pages, one ``{"image": path, "markdown": text}`` JSON
object per line, image paths relative to the JSONL file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lightning_modules.page_datamodule import PageDataModule
from zoo.data.page_datasets import ImageFileDataset
from zoo.inputs.processor import OCRProcessor
from zoo.inputs.prompts import MARKDOWN_PROMPT
from zoo.registry import register_datamodule

log = logging.getLogger(__name__)


def read_jsonl(path: Path | str) -> list[tuple[Path, str]]:
    """``(image path, markdown)`` of every non-empty line; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such JSONL file")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error})") from error
        if not (
            isinstance(record, dict)
            and isinstance(record.get("image"), str)
            and isinstance(record.get("markdown"), str)
        ):
            raise ValueError(
                f'{path}:{number}: expected {{"image": path, "markdown": text}}, got {line[:80]!r}'
            )
        entries.append((path.parent / record["image"], record["markdown"]))
    if not entries:
        raise ValueError(f"{path}: no pages (expected one JSON object per line)")
    return entries


@register_datamodule("jsonl")
class JsonlDataModule(PageDataModule):
    """Your own pages: JSONL lines of {"image": path, "markdown": text}, paths relative to it."""

    def __init__(
        self,
        processor: OCRProcessor,
        train_file: str,
        val_file: str | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        prompt: str = MARKDOWN_PROMPT,
        bucket_by_length: bool = True,
        bucket_batches: int = 32,
    ) -> None:
        super().__init__(
            processor, batch_size, num_workers, prompt, bucket_by_length, bucket_batches
        )
        self.train_set = ImageFileDataset(read_jsonl(train_file))
        if val_file is None:
            log.info("jsonl data: no val_file given, validating on the training pages")
            self.val_set = self.train_set
        else:
            self.val_set = ImageFileDataset(read_jsonl(val_file))

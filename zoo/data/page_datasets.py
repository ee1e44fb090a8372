"""Page datasets: samples, image loading that survives bad files, length bucketing, and the
image lists a model transcribes.

A dataset yields :class:`PageSample` (image + markdown). Length bucketing groups pages of
similar token length (answer + image tokens) so a batch wastes little padding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from torch.utils.data import (
    BatchSampler,
    Dataset,
    Sampler,
)

from zoo.inputs.preprocessing import TRANSPOSING_ORIENTATIONS, exif_orientation, to_rgb_page

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PageSample:
    """One training page: the RGB image and its ground-truth markdown in reading order."""

    image: Image.Image
    markdown: str


# What a page file that cannot be decoded raises.
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


def open_page(path: Path | str) -> Image.Image:
    """The page image at ``path`` in RGB, upright, 8 bits, on white (see
    :func:`~zoo.inputs.preprocessing.to_rgb_page`); raises one of
    :data:`UNREADABLE_IMAGE_ERRORS` when the file cannot be decoded."""
    with Image.open(path) as image:
        image.load()
        return to_rgb_page(image)


def load_image(path: Path | str) -> Image.Image | None:
    """The page image at ``path`` (:func:`open_page`); None (and a warning naming the file and
    the reason) when it cannot be read."""
    try:
        return open_page(path)
    except UNREADABLE_IMAGE_ERRORS as error:
        log.warning("skipping unreadable image %s: %s", path, error)
        return None


def image_size(path: Path | str) -> tuple[int, int] | None:
    """Width and height of the upright page, from the file header (no decoding); None when
    unreadable."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            turned = exif_orientation(image) in TRANSPOSING_ORIENTATIONS
            return (height, width) if turned else (width, height)
    except UNREADABLE_IMAGE_ERRORS:
        return None


class ImageFileDataset(Dataset):
    """Pages stored as image files with their markdown, decoded on access.

    An unreadable image is logged and skipped: the next readable page takes its place, so a
    bad file never breaks a batch or a run. Only when no file at all can be read is it an error.
    """

    def __init__(self, entries: Sequence[tuple[Path, str]]) -> None:
        self.entries = list(entries)
        self._unreadable: set[int] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def describe(self, index: int) -> tuple[str, tuple[int, int] | None]:
        """Markdown and image size of a page without decoding it (for length bucketing)."""
        path, markdown = self.entries[index]
        return markdown, image_size(path)

    def __getitem__(self, index: int) -> PageSample:
        for offset in range(len(self.entries)):
            candidate = (index + offset) % len(self.entries)
            if candidate in self._unreadable:
                continue
            path, markdown = self.entries[candidate]
            image = load_image(path)
            if image is not None:
                return PageSample(image, markdown)
            self._unreadable.add(candidate)
        first = self.entries[0][0] if self.entries else "(no entries)"
        raise RuntimeError(f"none of the {len(self.entries)} images is readable (first: {first})")


class LengthBucketBatchSampler(BatchSampler):
    """Batches of pages of similar token length.

    The indices of ``sampler`` (random for training, so every epoch differs) are taken in
    chunks of ``batch_size * bucket_batches``; each chunk is sorted by ``length_of`` and cut
    into batches, longest first so that a too-large batch fails early. Lightning can swap
    ``sampler`` for a distributed one, so each rank buckets its own share.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        drop_last: bool,
        length_of: Callable[[int], int],
        bucket_batches: int = 32,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        if bucket_batches < 1:
            raise ValueError(f"bucket_batches must be >= 1, got {bucket_batches}")
        self.length_of, self.bucket_batches = length_of, bucket_batches

    def _batches(self, chunk: list[int]) -> Iterator[list[int]]:
        ordered = sorted(chunk, key=self.length_of, reverse=True)
        batches = [
            ordered[k : k + self.batch_size] for k in range(0, len(ordered), self.batch_size)
        ]
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        # The short remainder batch holds the shortest pages; keep it last.
        yield from batches

    def __iter__(self) -> Iterator[list[int]]:
        chunk: list[int] = []
        for index in self.sampler:
            chunk.append(index)
            if len(chunk) == self.batch_size * self.bucket_batches:
                yield from self._batches(chunk)
                chunk = []
        if chunk:
            yield from self._batches(chunk)


class ImagePredictionDataset(Dataset):
    """``(image name, image)`` for every file, to run a model on; an unreadable image yields
    None (after a warning) and :func:`collate_predictions` drops it."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, Image.Image] | None:
        image = load_image(self.paths[index])
        return None if image is None else (self.paths[index].name, image)


def collate_predictions(items: list[tuple[str, Image.Image] | None]) -> dict[str, list]:
    """``{"names": [...], "images": [...]}`` of the readable pages of a batch (may be empty)."""
    readable = [item for item in items if item is not None]
    return {"names": [name for name, _ in readable], "images": [image for _, image in readable]}

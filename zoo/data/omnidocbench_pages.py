"""An OmniDocBench folder (ground-truth JSON + ``images/``) as a page source: its selected
pages, their images for a model to transcribe, and their ground truth as markdown."""

from __future__ import annotations

from pathlib import Path

from zoo.data.page_datasets import ImagePredictionDataset
from zoo.data.page_markdown import blocks_markdown
from zoo.eval.omnidocbench import GroundTruthPage, load_ground_truth, select_pages


def find_ground_truth(root: Path, ground_truth: str | None = None) -> Path:
    """``root / ground_truth`` when given, else the one ``*.json`` file directly in ``root``."""
    if ground_truth is not None:
        path = root / ground_truth
        if not path.is_file():
            raise FileNotFoundError(f"ground_truth={ground_truth!r}: no file {path}")
        return path
    candidates = sorted(root.glob("*.json"))
    if len(candidates) != 1:
        names = [c.name for c in candidates] or "none"
        raise FileNotFoundError(
            f"{root}: expected exactly one ground-truth *.json file, found {names}; "
            "name it with ground_truth=..."
        )
    return candidates[0]


def load_benchmark_pages(
    root: Path | str,
    ground_truth: str | None = None,
    page_filter: dict | None = None,
) -> list[GroundTruthPage]:
    """The benchmark's pages whose attributes match ``page_filter`` (e.g. ``{"language":
    "english"}`` or ``{"data_source": "academic_literature"}``), in file order."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"root={root}: expected an OmniDocBench folder (JSON + images/)")
    return select_pages(load_ground_truth(find_ground_truth(root, ground_truth)), page_filter)


def prediction_dataset(
    root: Path | str,
    ground_truth: str | None = None,
    images: str = "images",
    page_filter: dict | None = None,
) -> ImagePredictionDataset:
    """``(image name, image)`` of every selected benchmark page, in ground-truth order, for a
    model to transcribe (no processor needed); unreadable images yield None."""
    pages = load_benchmark_pages(root, ground_truth, page_filter)
    return ImagePredictionDataset([Path(root) / images / page.image_name for page in pages])


def page_markdown(page: GroundTruthPage) -> str:
    """A benchmark page's ground truth as markdown in reading order."""
    return blocks_markdown(page.blocks, page.relations)

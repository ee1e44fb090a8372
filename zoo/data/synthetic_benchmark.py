"""A stream of layout-engine pages written once as an OmniDocBench folder (the ground-truth JSON
and ``images/``), so that every run of a study is scored by ``zoo.evaluate`` on the same pages.

The pages are :func:`zoo.data.layout_engine.render_page` of stream ``seed``, pages ``0..n-1``:
the same pages a synthetic datamodule validates on with ``val_seed=seed``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zoo.data.layout_engine import render_page
from zoo.io.atomic import atomic_path, write_text_atomic

GROUND_TRUTH_NAME = "ground_truth.json"


def write_synthetic_benchmark(
    root: Path | str, seed: int, n_pages: int, page_size: int, style: dict[str, Any]
) -> Path:
    """Write pages ``0..n_pages-1`` of stream ``seed`` under ``root`` (``ground_truth.json`` and
    ``images/<page>.png``) and return the JSON's path.

    A folder already written with the same pages is kept as it is; one that holds other pages
    (another seed, count, size or style) is an error rather than a silent mix of two sets.
    """
    if n_pages < 1:
        raise ValueError(f"n_pages must be >= 1, got {n_pages}")
    root = Path(root)
    ground_truth = root / GROUND_TRUTH_NAME
    pages = [render_page(seed, index, page_size, **style) for index in range(n_pages)]
    records = [page.omnidocbench_record() for page in pages]
    text = json.dumps(records, ensure_ascii=False, indent=1)
    if ground_truth.is_file():
        if ground_truth.read_text(encoding="utf-8") != text:
            raise FileExistsError(
                f"{ground_truth} holds other pages than stream {seed} x {n_pages} at "
                f"{page_size} px in this style; delete {root} or choose another folder"
            )
        if all((root / "images" / f"{page.name}.png").is_file() for page in pages):
            return ground_truth
    (root / "images").mkdir(parents=True, exist_ok=True)
    for page in pages:
        with atomic_path(root / "images" / f"{page.name}.png") as temporary:
            page.image.save(temporary, format="PNG")
    return write_text_atomic(ground_truth, text)

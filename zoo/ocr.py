"""``python -m zoo.ocr --checkpoint DIR_OR_CKPT INPUT...``: transcribe images, folders and PDFs.

Every page becomes ``<out>/<name>.md`` (an image ``scan.png`` -> ``scan.md``; page 3 of
``paper.pdf`` -> ``paper_page3.md``; folders are read recursively). PDFs are rendered with
pypdfium2 at 144 dpi, as the official PDF script renders them. ``--prompt`` takes the official
presets (``markdown``: ``<image>\\n<|grounding|>Convert the document to markdown.``, ``free``:
``<image>\\nFree OCR.``) or any prompt text. ``--grounding`` also writes the raw answer
(``<name>.det.md``) and the page with the returned boxes drawn (``<name>.boxes.png``).

A file that cannot be read is reported and skipped, the rest completes; the exit status is 1
when something was skipped, else 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from zoo.inputs.grounding import draw_grounding, parse_grounding, strip_grounding
from zoo.inputs.prompts import resolve_prompt
from zoo.model.inference import load_inference_model, transcribe

log = logging.getLogger("zoo.ocr")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
PDF_SUFFIX = ".pdf"
PDF_DPI = 144
GROUNDING_TAG = "<|grounding|>"


@dataclass
class Page:
    """One page to transcribe: the output name and a function that loads its RGB image."""

    name: str
    source: str
    load: Callable[[], Image.Image]


def _open_image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def pdf_pages(path: Path, dpi: int = PDF_DPI) -> list[Page]:
    """The pages of a PDF, each rendered on demand (raises when the file is not a PDF)."""
    import pypdfium2

    document = pypdfium2.PdfDocument(path)

    def render(index: int) -> Image.Image:
        return document[index].render(scale=dpi / 72).to_pil().convert("RGB")

    return [
        Page(f"{path.stem}_page{index + 1}", f"{path} page {index + 1}", lambda i=index: render(i))
        for index in range(len(document))
    ]


def _files(folder: Path) -> list[Path]:
    suffixes = IMAGE_SUFFIXES | {PDF_SUFFIX}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def collect_pages(inputs: Sequence[Path], problems: list[str]) -> list[Page]:
    """The pages of every input (images, PDFs, folders of them); what cannot be read is
    appended to ``problems`` and left out."""
    pages = []
    for item in inputs:
        if not item.exists():
            problems.append(f"{item}: no such file or folder")
            continue
        for path in _files(item) if item.is_dir() else [item]:
            if path.suffix.lower() == PDF_SUFFIX:
                try:
                    pages += pdf_pages(path)
                except Exception as error:  # pypdfium2 raises its own PdfiumError
                    problems.append(f"{path}: not a readable PDF ({error})")
            else:
                pages.append(Page(path.stem, str(path), lambda p=path: _open_image(p)))
    return pages


def _batches(pages: list[Page], size: int, problems: list[str]) -> Iterator[list]:
    """Batches of ``(page, image)``; a page whose image cannot be decoded goes to ``problems``."""
    batch = []
    for page in pages:
        try:
            batch.append((page, page.load()))
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            problems.append(f"{page.source}: not a readable image ({error})")
            continue
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_page(out_dir: Path, name: str, image: Image.Image, answer: str, grounding: bool) -> None:
    """``<name>.md``; with ``grounding`` also ``<name>.det.md`` and ``<name>.boxes.png``."""
    (out_dir / f"{name}.md").write_text(strip_grounding(answer), encoding="utf-8")
    if grounding:
        (out_dir / f"{name}.det.md").write_text(answer, encoding="utf-8")
        draw_grounding(image, parse_grounding(answer)).save(out_dir / f"{name}.boxes.png")


def run(args: argparse.Namespace) -> list[str]:
    """Transcribe every page of the inputs; returns the problems met (empty: all done)."""
    problems: list[str] = []
    pages = collect_pages(args.inputs, problems)
    model, processor = load_inference_model(args.checkpoint)
    model.to(device=args.device, dtype=getattr(torch, args.dtype) if args.dtype else None).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    done = 0
    for batch in _batches(pages, args.batch_size, problems):
        answers = transcribe(
            model,
            processor,
            [image for _, image in batch],
            args.prompt,
            args.max_new_tokens,
            args.no_repeat_ngram_size,
        )
        for (page, image), answer in zip(batch, answers, strict=True):
            write_page(args.out, page.name, image, answer, args.grounding)
            done += 1
            log.info("[%d/%d] %s -> %s.md", done, len(pages), page.source, page.name)
    return problems


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.ocr", description="Transcribe images, folders and PDFs to markdown."
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="images, PDFs or folders of them")
    parser.add_argument(
        "--checkpoint", required=True, help="a Lightning .ckpt of zoo.train or a model directory"
    )
    parser.add_argument("--out", type=Path, default=Path("ocr_output"), help="output folder")
    parser.add_argument(
        "--prompt", default="markdown", help="markdown | free | a prompt text (default markdown)"
    )
    parser.add_argument("--grounding", action="store_true", help="draw the returned boxes")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=8192)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    args = parser.parse_args(argv)
    args.prompt = resolve_prompt(args.prompt)
    if args.grounding and GROUNDING_TAG not in args.prompt:
        parser.error(
            f"--grounding needs a prompt with {GROUNDING_TAG} (e.g. --prompt markdown), "
            f"got {args.prompt!r}"
        )
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    problems = run(args)
    for problem in problems:
        log.error("skipped %s", problem)
    print(f"markdown in {args.out}" + (f"; {len(problems)} skipped" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m zoo.ocr --checkpoint DIR_OR_CKPT INPUT...``: transcribe images, folders and PDFs.

Every page becomes ``<out>/<name>.md`` (an image ``scan.png`` -> ``scan.md``; page 3 of
``paper.pdf`` -> ``paper_page3.md``; folders are read recursively and their sub-folders kept:
``pages/a/scan.png`` given as ``pages`` -> ``a/scan.md``). Names never clash: pages that would
share one (``scan.png`` and ``scan.jpg``; ``x/page.png`` and ``y/page.png``) keep their extension
(``scan.png.md``), then as many parent folders as it takes (``x/page.png.md``); the same inputs
always give the same names. PDFs are rendered with
pypdfium2 at 144 dpi, as the official PDF script renders them. ``--generation`` picks a preset
of ``configs/generation`` (``default``; ``official_v2`` / ``official_v1``: the authors' recipes,
with their n-gram guard, view mode and post-processing); ``--prompt`` (the official presets
``markdown``: ``<image>\\n<|grounding|>Convert the document to markdown.``, ``free``:
``<image>\\nFree OCR.``, or any prompt text), ``--max-new-tokens`` and
``--no-repeat-ngram-size`` override it. ``--grounding`` also writes the raw answer
(``<name>.det.md``) and the page with the returned boxes drawn (``<name>.boxes.png``).

A file or PDF page that cannot be read is reported and skipped, the rest completes; the exit
status is 1 when something was skipped, else 0. Every file is written to a temporary name in
the output folder and renamed, so no ``.md`` is ever left half written; a failed write (a full
disk) stops the run, naming the file and the reason. Images are turned upright by their EXIF
orientation, 16-bit grey is scaled to 8 bits and transparency is composited onto white
(:func:`zoo.inputs.preprocessing.to_rgb_page`). ``--plugin MODULE`` allows a checkpoint's own
component module to be imported (never done without it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from zoo.data.page_datasets import UNREADABLE_IMAGE_ERRORS, open_page
from zoo.inputs.grounding import draw_grounding, parse_grounding
from zoo.inputs.prompts import resolve_prompt
from zoo.io.atomic import atomic_path, write_text_atomic
from zoo.layers.linear import lay_out_weights
from zoo.model.inference import (
    GenerationSettings,
    Transcription,
    load_inference_model,
    transcribe,
)
from zoo.model.quantize import QUANTIZE_MODES, check_quantize

log = logging.getLogger("zoo.ocr")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
PDF_SUFFIX = ".pdf"
PDF_DPI = 144
GROUNDING_TAG = "<|grounding|>"


@dataclass
class Page:
    """One page to transcribe: the output name and a function that loads its RGB image.

    ``file``, ``folder`` (the file's folder relative to the folder input it was found in) and
    ``part`` (``"_page3"`` for a PDF page) are what :func:`assign_names` names it from."""

    name: str
    source: str
    load: Callable[[], Image.Image]
    file: Path = Path()
    folder: Path = Path()
    part: str = ""


def pdf_pages(path: Path, dpi: int = PDF_DPI) -> list[Page]:
    """The pages of a PDF, each rendered on demand (raises when the file is not a PDF; a page
    that cannot be rendered raises ``ValueError`` when loaded)."""
    import pypdfium2

    document = pypdfium2.PdfDocument(path)

    def render(index: int) -> Image.Image:
        try:
            return document[index].render(scale=dpi / 72).to_pil().convert("RGB")
        except pypdfium2.PdfiumError as error:
            raise ValueError(f"the page cannot be rendered ({error})") from error

    return [
        Page(
            f"{path.stem}_page{index + 1}",
            f"{path} page {index + 1}",
            lambda i=index: render(i),
            path,
            part=f"_page{index + 1}",
        )
        for index in range(len(document))
    ]


def _candidate_name(page: Page, level: int) -> str:
    """Level 0: the stem under the input folder's sub-folders; 1: with the extension; k >= 2:
    with the extension under the file's last k - 1 parent folders instead."""
    file = page.file.resolve()
    stem = (file.stem if level == 0 else file.name) + page.part
    if level < 2:
        return (page.folder / stem).as_posix()
    parents = file.parent.parts[1:][-(level - 1) :]
    return Path(*parents, stem).as_posix()


def assign_names(pages: list[Page]) -> None:
    """Give every page a unique output name, the same for the same inputs whatever their order
    (compared case-insensitively, as some file systems do): pages that would share a name
    move up a level of :func:`_candidate_name` together until none do."""
    levels = [0] * len(pages)
    names = [_candidate_name(page, 0) for page in pages]
    most = max((len(page.file.resolve().parts) for page in pages), default=0)
    for _ in range(most + 1):
        holders: dict[str, list[int]] = defaultdict(list)
        for index, name in enumerate(names):
            holders[name.casefold()].append(index)
        clashing = [i for group in holders.values() if len(group) > 1 for i in group]
        if not clashing:
            break
        for index in clashing:
            levels[index] += 1
            names[index] = _candidate_name(pages[index], levels[index])
    for page, name in zip(pages, names, strict=True):
        page.name = name


def _files(folder: Path) -> list[Path]:
    suffixes = IMAGE_SUFFIXES | {PDF_SUFFIX}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def collect_pages(inputs: Sequence[Path], problems: list[str]) -> list[Page]:
    """The pages of every input (images, PDFs, folders of them); what cannot be read is
    appended to ``problems`` and left out."""
    pages, seen = [], set()
    for item in inputs:
        if not item.exists():
            problems.append(f"{item}: no such file or folder")
            continue
        for path in _files(item) if item.is_dir() else [item]:
            if path.resolve() in seen:  # given twice (a file and its folder): transcribed once
                continue
            seen.add(path.resolve())
            folder = path.parent.relative_to(item) if item.is_dir() else Path()
            if path.suffix.lower() != PDF_SUFFIX:
                pages.append(Page(path.stem, str(path), lambda p=path: open_page(p), path, folder))
                continue
            try:
                found = pdf_pages(path)
            except Exception as error:  # pypdfium2 raises its own PdfiumError
                problems.append(f"{path}: not a readable PDF ({error})")
                continue
            for page in found:
                page.folder = folder
            pages += found
    assign_names(pages)
    return pages


def _batches(pages: list[Page], size: int, problems: list[str]) -> Iterator[list]:
    """Batches of ``(page, image)``; a page whose image cannot be decoded goes to ``problems``."""
    batch = []
    for page in pages:
        try:
            batch.append((page, page.load()))
        except UNREADABLE_IMAGE_ERRORS as error:
            problems.append(f"{page.source}: cannot be read ({error})")
            continue
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_page(
    out_dir: Path, name: str, image: Image.Image, answer: Transcription, grounding: bool
) -> None:
    """``<name>.md``; with ``grounding`` also ``<name>.det.md`` and ``<name>.boxes.png``; each
    written atomically (an ``OSError`` names the file)."""
    target = out_dir / f"{name}.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, answer.markdown)
    if grounding:
        write_text_atomic(out_dir / f"{name}.det.md", answer.raw)
        with atomic_path(out_dir / f"{name}.boxes.png") as temporary:
            draw_grounding(image, parse_grounding(answer.raw)).save(temporary, format="PNG")


def run(args: argparse.Namespace) -> list[str]:
    """Transcribe every page of the inputs; returns the problems met (empty: all done)."""
    problems: list[str] = []
    pages = collect_pages(args.inputs, problems)
    model, processor = load_inference_model(args.checkpoint, args.plugin, args.settings.quantize)
    model.to(device=args.device, dtype=getattr(torch, args.dtype) if args.dtype else None).eval()
    lay_out_weights(model)  # the weight layouts of the precision it now runs in
    args.out.mkdir(parents=True, exist_ok=True)
    done = 0
    for batch in _batches(pages, args.batch_size, problems):
        answers = transcribe(model, processor, [image for _, image in batch], args.settings)
        for (page, image), answer in zip(batch, answers, strict=True):
            try:
                write_page(args.out, page.name, image, answer, args.grounding)
            except OSError as error:  # a full disk fails every later page too: stop here
                problems.append(f"{page.source}: {error}; stopped, {done} pages were written")
                return problems
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
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module of user components the checkpoint needs, imported because you name it "
        "(repeatable; a checkpoint's own plugin list is never imported)",
    )
    parser.add_argument(
        "--generation", default="default", help="a configs/generation preset (default, "
        "official_v2, official_v1)",
    )  # fmt: skip
    parser.add_argument(
        "--prompt", default=None, help="markdown | free | a prompt text (default: the preset's)"
    )
    parser.add_argument("--grounding", action="store_true", help="draw the returned boxes")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    parser.add_argument(
        "--quantize", choices=QUANTIZE_MODES, default=None,
        help="weight-only int8 decoder layers, run in bfloat16 (default: the preset's)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        args.settings = GenerationSettings.preset(
            args.generation,
            prompt=args.prompt,
            max_new_tokens=args.max_new_tokens,
            no_repeat_ngram_size=args.no_repeat_ngram_size,
            quantize=args.quantize,
        )
        check_quantize(args.settings.quantize, getattr(torch, args.dtype) if args.dtype else None)
    except ValueError as error:
        parser.error(str(error))
    args.prompt = resolve_prompt(args.settings.prompt)
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

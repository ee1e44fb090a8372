"""zoo.ocr and zoo.inputs.grounding: the grounding format of the official models, and the OCR
command on images, folders and PDFs with a tiny untrained model (its text is gibberish; the plumbing
is what is tested)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from PIL import Image, ImageDraw

from tests.conftest import compose_train
from zoo.inputs.grounding import (
    GroundedBlock,
    draw_grounding,
    parse_grounding,
    strip_grounding,
    to_pixels,
)
from zoo.inputs.prompts import PROMPT_PRESETS, resolve_prompt
from zoo.model.inference import load_inference_model
from zoo.ocr import main, parse_args, pdf_pages
from zoo.run_setup import make_module

GROUNDED_ANSWER = (
    "<|ref|>title<|/ref|><|det|>[[100, 50, 899, 120]]<|/det|>\n# A Title\n\n"
    "<|ref|>text<|/ref|><|det|>[[100, 200, 500, 400], [520, 200, 899, 400]]<|/det|>\n"
    "Two columns of text.\n\n"
    "<|ref|>image<|/ref|><|det|>[[1, 2, 3]]<|/det|>\n"
)


def save_tiny_checkpoint(path: Path) -> Path:
    """A Lightning .ckpt of the tiny default ``zoo.train`` model, trained 0 steps."""
    module = make_module(compose_train([]))
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu"
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A folder with an image, a 2-page PDF (PIL's PDF writer), a broken image and PDF."""
    folder = tmp_path / "inputs"
    (folder / "sub").mkdir(parents=True)
    page = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(page).text((10, 10), "Hello", fill="black")
    page.save(folder / "scan.png")
    page.save(folder / "doc.pdf", save_all=True, append_images=[Image.new("RGB", (200, 300))])
    (folder / "sub" / "bad.jpg").write_bytes(b"not an image")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    return folder


def test_official_prompt_presets() -> None:
    assert PROMPT_PRESETS["markdown"] == "<image>\n<|grounding|>Convert the document to markdown."
    assert PROMPT_PRESETS["free"] == "<image>\nFree OCR."
    assert resolve_prompt("free") == "<image>\nFree OCR."
    assert resolve_prompt("Describe.") == "<image>\nDescribe."
    assert resolve_prompt("<image>Read it.") == "<image>Read it."


def test_grounding_parser_reads_boxes_and_drops_malformed_ones() -> None:
    blocks = parse_grounding(GROUNDED_ANSWER)
    assert blocks == [
        GroundedBlock("title", ((100.0, 50.0, 899.0, 120.0),)),
        GroundedBlock("text", ((100.0, 200.0, 500.0, 400.0), (520.0, 200.0, 899.0, 400.0))),
    ]
    assert parse_grounding("<|ref|>x<|/ref|><|det|>__import__('os')<|/det|>") == []
    text = strip_grounding(GROUNDED_ANSWER)
    assert "<|" not in text and "# A Title" in text and "Two columns of text." in text


def test_boxes_are_normalised_to_999() -> None:
    assert to_pixels((0, 0, 999, 999), 640, 480) == (0, 0, 640, 480)
    assert to_pixels((999, 499.5, 0, 0), 1000, 1000) == (0, 0, 1000, 500)
    assert to_pixels((-5, 0, 2000, 999), 100, 100) == (0, 0, 100, 100)


def test_grounding_boxes_are_drawn() -> None:
    page = Image.new("RGB", (1000, 1000), "white")
    drawn = draw_grounding(page, parse_grounding(GROUNDED_ANSWER))
    assert drawn.size == page.size and page.getpixel((100, 300)) == (255, 255, 255)
    assert drawn.getpixel((100, 300)) != (255, 255, 255)  # left edge of the first text box
    assert drawn.getpixel((300, 300)) != (255, 255, 255)  # shaded inside
    assert drawn.getpixel((50, 700)) == (255, 255, 255)  # outside every box


def test_pdf_pages_render_at_144_dpi(inputs: Path) -> None:
    pages = pdf_pages(inputs / "doc.pdf")
    assert [page.name for page in pages] == ["doc_page1", "doc_page2"]
    # PIL writes 72 dpi pages: 300 x 200 pixels are 300 x 200 points, rendered at 2x.
    assert pages[0].load().size == (600, 400) and pages[1].load().size == (400, 600)


def test_ocr_writes_every_page_and_skips_unreadable_files(
    tiny_ckpt: Path, inputs: Path, tmp_path: Path, caplog
) -> None:
    out = tmp_path / "out"
    status = main(
        [str(inputs), str(tmp_path / "missing.png"), "--checkpoint", str(tiny_ckpt)]
        + ["--out", str(out), "--max-new-tokens", "4", "--batch-size", "3", "--grounding"]
    )
    assert status == 1
    names = ["doc_page1", "doc_page2", "scan"]
    assert sorted(p.name for p in out.glob("*.md")) == sorted(
        [f"{n}.md" for n in names] + [f"{n}.det.md" for n in names]
    )
    assert Image.open(out / "scan.boxes.png").size == (300, 200)
    assert Image.open(out / "doc_page2.boxes.png").size == (400, 600)
    skipped = " ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert all(name in skipped for name in ("bad.jpg", "broken.pdf", "missing.png"))
    assert main([str(inputs / "scan.png"), "--checkpoint", str(tiny_ckpt), "--out", str(out),
                 "--max-new-tokens", "1"]) == 0  # fmt: skip


def test_ocr_loads_the_checkpoint_model(tiny_ckpt: Path) -> None:
    model, processor = load_inference_model(tiny_ckpt)
    reference = make_module(compose_train([]))
    assert model.image_mode == reference.model.image_mode
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.model.state_dict().items()
    }
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        load_inference_model(tiny_ckpt.parent / "nowhere.ckpt")


def test_grounding_needs_a_grounding_prompt(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        parse_args([str(tmp_path), "--checkpoint", "x", "--prompt", "free", "--grounding"])

"""Image preprocessing against transformers' DeepSeek-OCR 2 processor and the official recipes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from zoo.inputs.preprocessing import (
    PAD_COLOR,
    VIEW_MODES,
    ImageBatch,
    ViewMode,
    get_view_mode,
    preprocess,
    select_crop_grid,
)

pil_processor = pytest.importorskip(
    "transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2"
)

PAD_VALUE = ((torch.tensor(127.0) / 255 - 0.5) / 0.5).item()  # in float32, as the views
# (width, height): small page (no crops), the 768 boundary, just over it, wide, tall, A4-like
# scans at 150 and 200 dpi, a page whose padding offsets differ between PIL and transformers.
PAGE_SIZES = [
    (500, 300),
    (768, 768),
    (769, 500),
    (2000, 900),
    (700, 2400),
    (1240, 1754),
    (1654, 2339),
    (516, 729),
]


def noise_page(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth random colours: bicubic resizing of it is sensitive to every offset and scale."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(2, height // 16), max(2, width // 16), 3))
    image = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BILINEAR)
    return Image.fromarray(np.array(image) ^ rng.integers(0, 32, (height, width, 3), np.uint8))


def to_views(images: list[Image.Image]) -> torch.Tensor:
    """Official ToTensor + Normalize(0.5, 0.5), written with NumPy."""
    array = np.stack([np.asarray(image, dtype=np.float32) for image in images])
    return torch.from_numpy((array / 255 - 0.5) / 0.5).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def oracle():
    return pil_processor.DeepseekOcr2ImageProcessorPil()


def oracle_grid(width: int, height: int, mode: ViewMode) -> tuple[int, int]:
    """The tile grid by transformers' search, with the official tiling threshold."""
    threshold = mode.crop_above or mode.local_size
    if mode.local_size is None or max(width, height) <= threshold:
        return (0, 0)
    grid = pil_processor.get_optimal_tiled_canvas(
        (height, width), (mode.local_size,) * 2, mode.min_crops, mode.max_crops
    )
    return (0, 0) if grid == (1, 1) else grid


def content_box(width: int, height: int, size: int, centre) -> tuple[slice, slice]:
    """Rows and columns of a page scaled into a ``size`` square; ``centre`` places it."""
    if width >= height:
        new = round(height / width * size)
        return slice(centre(size - new), centre(size - new) + new), slice(0, size)
    new = round(width / height * size)
    return slice(0, size), slice(centre(size - new), centre(size - new) + new)


def pil_centre(free: int) -> int:  # ImageOps.pad: round(free * 0.5), ties to even
    return round(free * 0.5)


def transformers_centre(free: int) -> int:  # DeepseekOcr2ImageProcessorPil.pad_to_square
    return free // 2


def assert_global_view_matches(ours, theirs, width, height) -> None:
    """Same page content (each placed by its own centring rule) and pad colour elsewhere."""
    size = ours.shape[-1]
    rows, cols = content_box(width, height, size, pil_centre)
    rows_t, cols_t = content_box(width, height, size, transformers_centre)
    torch.testing.assert_close(ours[:, rows, cols], theirs[:, rows_t, cols_t], atol=1e-6, rtol=0)
    padding = torch.ones(size, size, dtype=torch.bool)
    padding[rows, cols] = False
    assert torch.all(ours[:, padding] == PAD_VALUE)


@pytest.mark.parametrize(("width", "height"), PAGE_SIZES)
def test_v2_matches_transformers_processor(oracle, width, height):
    page = noise_page(width, height)
    ours = preprocess([page], "v2")
    theirs = oracle([page], return_tensors="pt")

    assert ours.tiles_per_image == theirs["num_local_patches"].tolist()
    if ours.local_views is None:
        assert "pixel_values_local" not in theirs
    else:
        torch.testing.assert_close(
            ours.local_views, theirs["pixel_values_local"], atol=1e-6, rtol=0
        )
    assert ours.global_views.shape == (1, 3, 1024, 1024)
    assert_global_view_matches(ours.global_views[0], theirs["pixel_values"][0], width, height)
    if content_box(width, height, 1024, pil_centre) == content_box(
        width, height, 1024, transformers_centre
    ):
        torch.testing.assert_close(ours.global_views, theirs["pixel_values"], atol=1e-6, rtol=0)


def test_padding_follows_imageops_pad_where_transformers_differs():
    """516x729: 299 free columns; ImageOps.pad puts 150 left, transformers 149."""
    ours = preprocess([Image.new("RGB", (516, 729), "white")], "v2").global_views[0]
    left = content_box(516, 729, 1024, pil_centre)[1].start
    assert left == 150
    assert torch.all(ours[:, :, left - 1] == PAD_VALUE)
    assert torch.all(ours[:, 200, left : left + 725] == 1.0)


def test_crop_grid_matches_transformers_search():
    sizes = [(w, h) for w in range(100, 4200, 97) for h in range(100, 4200, 89)]
    for name in ("gundam", "gundam_master", "v2"):
        mode = VIEW_MODES[name]
        for width, height in sizes:
            expected = oracle_grid(width, height, mode)
            assert select_crop_grid(width, height, mode) == expected, (name, width, height)


def test_known_crop_grids():
    v2, gundam = VIEW_MODES["v2"], VIEW_MODES["gundam"]
    assert select_crop_grid(768, 768, v2) == (0, 0)  # both sides <= 768
    assert select_crop_grid(769, 400, v2) == (2, 1)
    assert select_crop_grid(1654, 2339, v2) == (2, 3)  # A4 portrait: 6 crops
    assert select_crop_grid(640, 640, gundam) == (0, 0)
    assert select_crop_grid(1654, 2339, gundam) == (2, 3)
    assert select_crop_grid(3000, 1000, gundam) == (3, 1)
    # 16:9 slide: (2, 1) and (4, 2) tie; the page is large enough for the bigger grid
    assert select_crop_grid(2667, 1500, gundam) == (4, 2)
    assert select_crop_grid(1333, 750, gundam) == (2, 1)
    # Gundam-master keeps the official 640 threshold although its tiles are 1024
    assert select_crop_grid(700, 700, VIEW_MODES["gundam_master"]) == (2, 2)


def official_views(page: Image.Image, mode: ViewMode) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The official v1/v2 recipe with PIL crop boxes: resize or ImageOps.pad, tiles row-major."""
    size = (mode.global_size,) * 2
    if mode.global_fit == "resize":
        global_view = page.resize(size, Image.BICUBIC)
    else:
        global_view = ImageOps.pad(page, size, color=(127, 127, 127))
    cols, rows = oracle_grid(page.width, page.height, mode)
    if not cols:
        return to_views([global_view]), None
    tile = mode.local_size
    resized = page.resize((cols * tile, rows * tile), Image.BICUBIC)
    boxes = [
        (c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)
        for r in range(rows)
        for c in range(cols)
    ]
    return to_views([global_view]), to_views([resized.crop(box) for box in boxes])


@pytest.mark.parametrize("name", sorted(VIEW_MODES))
def test_every_mode_matches_official_recipe(name):
    mode = VIEW_MODES[name]
    for width, height in [(450, 300), (1240, 1754)]:
        page = noise_page(width, height, seed=width)
        batch = preprocess([page], mode)
        global_view, tiles = official_views(page, mode)
        torch.testing.assert_close(batch.global_views, global_view, atol=1e-6, rtol=0)
        if tiles is None:
            assert batch.local_views is None and batch.crop_grids == [(0, 0)]
        else:
            torch.testing.assert_close(batch.local_views, tiles, atol=1e-6, rtol=0)


def test_resize_modes_squash_and_pad_modes_keep_aspect():
    page = Image.new("RGB", (800, 400), "white")
    for name in ("tiny", "small"):
        views = preprocess([page], name).global_views
        assert views.shape[-1] == VIEW_MODES[name].global_size
        assert torch.all(views == 1.0)
    for name in ("base", "large"):
        views = preprocess([page], name).global_views[0]
        size = VIEW_MODES[name].global_size
        assert torch.all(views[:, : size // 4] == PAD_VALUE)
        assert torch.all(views[:, size // 4 : 3 * size // 4] == 1.0)
    assert PAD_COLOR == (127, 127, 127)


def test_tiles_are_row_major_page_by_page():
    colours = np.arange(6 * 3, dtype=np.uint8).reshape(6, 3) * 13  # tile k of a 2x3 grid
    cells = colours.reshape(3, 2, 3).repeat(768, axis=0).repeat(768, axis=1)
    page = Image.fromarray(cells)  # 1536 x 2304: exactly a (2 cols, 3 rows) grid of 768 tiles
    small = Image.new("RGB", (300, 200), "black")
    batch = preprocess([small, page, small], "v2")
    assert batch.crop_grids == [(0, 0), (2, 3), (0, 0)]
    assert batch.local_views.shape == (6, 3, 768, 768)
    expected = torch.from_numpy(colours / 255 * 2 - 1).float()
    torch.testing.assert_close(batch.local_views.mean(dim=(2, 3)), expected)


def test_tiny_mode_from_mapping():
    mode = get_view_mode({"name": "v2", "global_size": 256, "local_size": 192})
    batch = preprocess([noise_page(500, 260), noise_page(150, 120)], mode)
    assert batch.global_views.shape == (2, 3, 256, 256)
    assert batch.crop_grids == [(2, 1), (0, 0)]
    assert batch.local_views.shape == (2, 3, 192, 192)
    assert mode.global_tokens_per_side == 4 and mode.local_tokens_per_side == 3


def test_get_view_mode_errors():
    assert get_view_mode(None) is VIEW_MODES["v2"]
    with pytest.raises(ValueError, match="unknown view mode 'huge'.*gundam"):
        get_view_mode("huge")
    with pytest.raises(ValueError, match="unknown fields"):
        get_view_mode({"name": "v2", "tile": 3})
    with pytest.raises(ValueError, match="global_fit"):
        ViewMode("x", 512, global_fit="crop")
    with pytest.raises(ValueError, match="min_crops"):
        get_view_mode({"name": "v2", "min_crops": 7})


def test_bad_images_are_named():
    good = Image.new("RGB", (10, 10))
    with pytest.raises(ValueError, match="image 1: has zero size 0x5"):
        preprocess([good, Image.new("RGB", (0, 5))], "v2")
    with pytest.raises(ValueError, match="image 0: cannot convert PIL mode 'La'"):
        preprocess([Image.new("La", (4, 4))], "v2")
    with pytest.raises(TypeError, match="image 1: expected a PIL.Image.Image, got ndarray"):
        preprocess([good, np.zeros((4, 4, 3))], "v2")
    with pytest.raises(ValueError, match="at least one image"):
        preprocess([], "v2")


def test_non_rgb_pages_are_converted():
    grey = Image.new("L", (300, 200), 255)
    torch.testing.assert_close(
        preprocess([grey], "base").global_views,
        preprocess([grey.convert("RGB")], "base").global_views,
    )


def test_image_batch_to_and_concat():
    first = preprocess([noise_page(1000, 400), noise_page(200, 100)], "v2")
    second = preprocess([noise_page(300, 300)], "v2")
    third = preprocess([noise_page(900, 1800)], "v2")
    both = ImageBatch.concat([first, second, third])
    assert len(both) == 4
    assert both.crop_grids == first.crop_grids + second.crop_grids + third.crop_grids
    torch.testing.assert_close(both.local_views, torch.cat([first.local_views, third.local_views]))
    half = both.to("cpu", torch.bfloat16)
    assert half.global_views.dtype == half.local_views.dtype == torch.bfloat16
    assert half.crop_grids == both.crop_grids
    with pytest.raises(ValueError, match="different sizes"):
        ImageBatch.concat([first, preprocess([noise_page(100, 100)], "tiny")])
    with pytest.raises(ValueError, match="need 3 local views, got 2"):
        ImageBatch(first.global_views[:1], first.local_views, [(3, 1)])


def test_views_are_contiguous_float32():
    batch = preprocess([noise_page(1654, 2339)], "gundam")
    for views in (batch.global_views, batch.local_views):
        assert views.dtype == torch.float32 and views.is_contiguous()


def demo_pages(shared_dir: Path) -> list[Path]:
    pages = sorted((shared_dir / "omnidocbench_demo" / "images").glob("*.jpg"))
    if not pages:
        pytest.skip("no demo pages in the shared folder")
    return pages


def test_real_pages_v2_match_transformers(oracle, shared_dir):
    for path in demo_pages(shared_dir)[1::6]:  # a sixth keeps it fast; all 18 pass
        page = Image.open(path).convert("RGB")
        ours = preprocess([page], "v2")
        theirs = oracle([page], return_tensors="pt")
        assert ours.tiles_per_image == theirs["num_local_patches"].tolist(), path.name
        if ours.local_views is not None:
            torch.testing.assert_close(
                ours.local_views, theirs["pixel_values_local"], atol=1e-6, rtol=0
            )
        assert_global_view_matches(
            ours.global_views[0], theirs["pixel_values"][0], page.width, page.height
        )


def test_real_pages_gundam_match_official_recipe(shared_dir):
    for path in demo_pages(shared_dir)[::6]:
        page = Image.open(path).convert("RGB")
        batch = preprocess([page], "gundam")
        global_view, tiles = official_views(page, VIEW_MODES["gundam"])
        torch.testing.assert_close(batch.global_views, global_view, atol=1e-6, rtol=0)
        if tiles is not None:
            torch.testing.assert_close(batch.local_views, tiles, atol=1e-6, rtol=0)

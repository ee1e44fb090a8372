"""Image-token counts and the order of view embeddings in each page's token sequence."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from zoo.inputs.image_layout import assemble_image_embeddings, num_image_tokens
from zoo.inputs.preprocessing import VIEW_MODES, get_view_mode, select_crop_grid

SEP, NL = -1.0, -2.0
PAGE_SIZES = [(300, 200), (640, 640), (768, 768), (1654, 2339), (2667, 1500), (800, 3000)]


def labelled_tokens(n_images: int, n_global: int, tiles: int, n_local: int):
    """Tokens whose value says what they are: 1000 * page + j, or 100000 + 1000 * tile + m."""
    global_tokens = (1000 * torch.arange(n_images)[:, None] + torch.arange(n_global)).float()
    local_tokens = (100000 + 1000 * torch.arange(tiles)[:, None] + torch.arange(n_local)).float()
    return global_tokens[..., None], (local_tokens[..., None] if tiles else None)


def assemble_labels(grids, n_global=4, n_local=4, newline=True) -> list[list[int]]:
    tiles = sum(cols * rows for cols, rows in grids)
    global_tokens, local_tokens = labelled_tokens(len(grids), n_global, tiles, n_local)
    sequences = assemble_image_embeddings(
        global_tokens,
        local_tokens,
        grids,
        torch.tensor([SEP]),
        torch.tensor([NL]) if newline else None,
    )
    return [s.squeeze(-1).long().tolist() for s in sequences]


def test_v1_order_by_hand():
    """Stitched tile rows with newlines, then global rows with newlines, then the separator."""
    wide, bare, tall = assemble_labels([(2, 1), (0, 0), (1, 2)])
    assert wide == [
        100000, 100001, 101000, 101001, -2,
        100002, 100003, 101002, 101003, -2,
        0, 1, -2, 2, 3, -2, -1,
    ]  # fmt: skip
    assert bare == [1000, 1001, -2, 1002, 1003, -2, -1]
    assert tall == [
        102000, 102001, -2, 102002, 102003, -2,
        103000, 103001, -2, 103002, 103003, -2,
        2000, 2001, -2, 2002, 2003, -2, -1,
    ]  # fmt: skip


def test_v2_order_by_hand():
    """Every tile's tokens tile by tile, then the global tokens, then the separator."""
    wide, bare = assemble_labels([(2, 1), (0, 0)], n_global=4, n_local=3, newline=False)
    assert wide == [100000, 100001, 100002, 101000, 101001, 101002, 0, 1, 2, 3, -1]
    assert bare == [1000, 1001, 1002, 1003, -1]


def official_sequence(global_tokens, local_tokens, grid, separator, newline):
    """One page as the official code lays it out (view, permute, concatenate newline columns)."""
    width = global_tokens.shape[-1]
    if newline is None:
        parts = [] if local_tokens is None else [local_tokens.reshape(-1, width)]
        return torch.cat([*parts, global_tokens, separator[None]])
    g = math.isqrt(global_tokens.shape[0])
    rows_g = torch.cat([global_tokens.view(g, g, width), newline.expand(g, 1, width)], dim=1)
    parts = []
    if local_tokens is not None:
        cols, rows = grid
        side = math.isqrt(local_tokens.shape[1])
        stitched = local_tokens.view(rows, cols, side, side, width).permute(0, 2, 1, 3, 4)
        stitched = stitched.reshape(rows * side, cols * side, width)
        newlines = newline.expand(rows * side, 1, width)
        parts.append(torch.cat([stitched, newlines], dim=1).reshape(-1, width))
    return torch.cat([*parts, rows_g.reshape(-1, width), separator[None]])


@pytest.mark.parametrize("newline", [True, False])
def test_matches_official_recipe_on_random_batches(newline):
    generator = torch.Generator().manual_seed(0)
    grids = [(2, 3), (0, 0), (3, 1), (1, 2), (0, 0), (4, 2)]
    tiles = [cols * rows for cols, rows in grids]
    width = 8
    global_tokens = torch.randn(len(grids), 16, width, generator=generator)
    local_tokens = torch.randn(sum(tiles), 9, width, generator=generator)
    separator = torch.randn(width, generator=generator)
    image_newline = torch.randn(width, generator=generator) if newline else None

    sequences = assemble_image_embeddings(
        global_tokens, local_tokens, grids, separator, image_newline
    )
    per_page_local = local_tokens.split(tiles)
    for i, grid in enumerate(grids):
        local = per_page_local[i] if tiles[i] else None
        expected = official_sequence(global_tokens[i], local, grid, separator, image_newline)
        assert torch.equal(sequences[i], expected), i


def test_pages_without_tiles_only():
    global_tokens = torch.randn(3, 16, 4)
    for local in (None, torch.empty(0, 9, 4)):
        sequences = assemble_image_embeddings(
            global_tokens, local, [(0, 0)] * 3, torch.zeros(4), None
        )
        assert [s.shape[0] for s in sequences] == [17, 17, 17]
        assert torch.equal(sequences[2][:16], global_tokens[2])


def test_gradients_reach_tokens_and_learned_vectors():
    global_tokens = torch.randn(2, 4, 3, requires_grad=True)
    local_tokens = torch.randn(2, 4, 3, requires_grad=True)
    separator = torch.randn(3, requires_grad=True)
    newline = torch.randn(3, requires_grad=True)
    sequences = assemble_image_embeddings(
        global_tokens, local_tokens, [(2, 1), (0, 0)], separator, newline
    )
    torch.cat(sequences).sum().backward()
    assert torch.equal(global_tokens.grad, torch.ones_like(global_tokens))
    assert torch.equal(local_tokens.grad, torch.ones_like(local_tokens))
    assert separator.grad.eq(2).all()  # one separator per page
    assert newline.grad.eq(2 + 2 + 2).all()  # 2 stitched rows + 2 global rows + 2 global rows


def test_low_precision_tokens_keep_their_dtype():
    sequences = assemble_image_embeddings(
        torch.randn(1, 4, 3, dtype=torch.bfloat16), None, [(0, 0)], torch.randn(3), None
    )
    assert sequences[0].dtype == torch.bfloat16


def test_bad_inputs_are_named():
    tokens = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="need 2 local views, got 1"):
        assemble_image_embeddings(
            tokens, torch.randn(1, 4, 3), [(2, 1), (0, 0)], torch.zeros(3), None
        )
    with pytest.raises(ValueError, match="3 crop grids for 2 global views"):
        assemble_image_embeddings(tokens, None, [(0, 0)] * 3, torch.zeros(3), None)
    with pytest.raises(ValueError, match="not a square grid"):
        assemble_image_embeddings(
            torch.randn(1, 5, 3), None, [(0, 0)], torch.zeros(3), torch.zeros(3)
        )
    with pytest.raises(ValueError, match=r"view_separator must be \[3\]"):
        assemble_image_embeddings(tokens, None, [(0, 0)] * 2, torch.zeros(4), None)


# Documented counts: Tiny 64, Small 100, Base 256, Large 400 vision tokens (+ one newline per
# row in v1, + the separator); Gundam n x 100 + 256; Gundam-master n x 256 + 400; v2 256..1120.
@pytest.mark.parametrize(
    ("mode", "size", "expected"),
    [
        ("tiny", (1654, 2339), 64 + 8 + 1),
        ("small", (1654, 2339), 100 + 10 + 1),
        ("base", (1654, 2339), 256 + 16 + 1),
        ("large", (1654, 2339), 400 + 20 + 1),
        ("gundam", (600, 400), 256 + 16 + 1),  # both sides <= 640: global view only
        ("gundam", (1654, 2339), 256 + 16 + 6 * 100 + 3 * 10 + 1),  # 2 x 3 tiles, 30 rows
        ("gundam", (3000, 1000), 256 + 16 + 3 * 100 + 10 + 1),  # 3 x 1 tiles, 10 rows
        ("gundam", (2667, 1500), 256 + 16 + 8 * 100 + 20 + 1),  # 4 x 2 tiles, 20 rows
        ("gundam_master", (1654, 2339), 400 + 20 + 6 * 256 + 3 * 16 + 1),
        ("v2", (768, 768), 256 + 1),
        ("v2", (2667, 1500), 256 + 2 * 144 + 1),
        ("v2", (2000, 1500), 256 + 6 * 144 + 1),
        ("v2", (1654, 2339), 256 + 6 * 144 + 1),  # the documented maximum, 1120 + 1
    ],
)
def test_documented_token_counts(mode, size, expected):
    assert num_image_tokens(*size, mode) == expected


def test_tiny_mode_counts_follow_view_sizes():
    tiny_v2 = {"name": "v2", "global_size": 256, "local_size": 192}
    assert num_image_tokens(150, 120, tiny_v2) == 16 + 1
    assert num_image_tokens(500, 260, tiny_v2) == 16 + 2 * 9 + 1
    tiny_gundam = {"name": "gundam", "global_size": 256, "local_size": 128}
    # 2 x 3 tiles of 2 x 2 tokens: a 6-row, 4-column stitched grid
    assert num_image_tokens(256, 384, tiny_gundam) == 4 * 5 + (3 * 2) * (2 * 2 + 1) + 1


@pytest.mark.parametrize("name", sorted(VIEW_MODES))
def test_assembled_length_equals_num_image_tokens(name):
    mode = VIEW_MODES[name]
    grids = [select_crop_grid(w, h, mode) for w, h in PAGE_SIZES]
    tiles = sum(cols * rows for cols, rows in grids)
    n_local = mode.local_tokens_per_side**2 if mode.local_size else 0
    global_tokens, local_tokens = labelled_tokens(
        len(grids), mode.global_tokens_per_side**2, tiles, n_local
    )
    sequences = assemble_image_embeddings(
        global_tokens,
        local_tokens,
        grids,
        torch.tensor([SEP]),
        torch.tensor([NL]) if mode.newlines else None,
    )
    assert [len(s) for s in sequences] == [num_image_tokens(w, h, mode) for w, h in PAGE_SIZES]


def transformers_v2_count(width: int, height: int) -> int:
    """DeepseekOcr2Processor.replace_image_token for a page with transformers' tile count."""
    pil = pytest.importorskip(
        "transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2"
    )
    processing = pytest.importorskip("transformers.models.deepseek_ocr2.processing_deepseek_ocr2")
    image_processor = pil.DeepseekOcr2ImageProcessorPil()
    crops = 0
    if max(width, height) > image_processor.tile_size:
        cols, rows = pil.get_optimal_tiled_canvas((height, width), (768, 768), 2, 6)
        crops = cols * rows
    processor = SimpleNamespace(
        image_processor=image_processor, patch_size=16, downsample_ratio=4, image_token="<image>"
    )
    text = processing.DeepseekOcr2Processor.replace_image_token(
        processor, {"num_local_patches": [crops]}, 0
    )
    return text.count("<image>")


@pytest.mark.parametrize(("width", "height"), PAGE_SIZES)
def test_v2_counts_match_transformers_processor(width, height):
    assert num_image_tokens(width, height, "v2") == transformers_v2_count(width, height)


def test_v2_counts_of_real_pages_match_transformers_processor(shared_dir):
    pages = sorted((shared_dir / "omnidocbench_demo" / "images").glob("*.jpg"))
    if not pages:
        pytest.skip("no demo pages in the shared folder")
    for path in pages:
        width, height = Image.open(path).size  # reads the header only
        assert num_image_tokens(width, height, "v2") == transformers_v2_count(width, height)


def test_default_mode_is_v2():
    assert num_image_tokens(1654, 2339) == num_image_tokens(1654, 2339, get_view_mode("v2"))


def test_a_layout_first_built_in_inference_mode_still_trains():
    """The cached layout of a grid first seen by generation must serve a training step too."""
    grids = [(3, 1)]  # a grid no other test uses, so the cache is cold
    width = 4
    with torch.inference_mode():
        assemble_image_embeddings(
            torch.randn(1, 4, width), torch.randn(3, 4, width), grids, torch.randn(width), None
        )
    tokens = torch.randn(1, 4, width, requires_grad=True)
    (out,) = assemble_image_embeddings(
        tokens, torch.randn(3, 4, width), grids, torch.randn(width), None
    )
    out.sum().backward()
    assert torch.equal(tokens.grad, torch.ones_like(tokens))

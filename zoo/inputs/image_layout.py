"""How many placeholder tokens a page takes, and the order its view embeddings fill them.

One page's image sequence, as the official models build it (DeepSeek-OCR vLLM
``deepseek_ocr.py`` ``_pixel_values_to_embedding`` and HF ``modeling_deepseekocr.py``;
DeepSeek-OCR 2 ``deepseek_ocr2.py`` and transformers' ``DeepseekOcr2Model.get_image_features``):

* v1 (with ``image_newline``): the local tiles stitched into one big grid of
  ``rows * l`` x ``cols * l`` tokens, each grid row followed by a newline token; then the
  global view's ``g`` rows, each followed by a newline; then the view separator.
* v2 (no newline): every tile's tokens, tile by tile; then the global view's tokens; then the
  view separator.

Local views always come before the global view: the ``global_view_pos: "head"`` of the
released configs is read by the official code but never used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import torch

from zoo.inputs.preprocessing import ViewMode, get_view_mode, select_crop_grid

# Codes of the two learned vectors in a layout template (tokens have codes >= 0).
SEPARATOR_CODE = -1
NEWLINE_CODE = -2


def num_image_tokens(
    width: int, height: int, mode: ViewMode | str | Mapping[str, object] | None = None
) -> int:
    """Placeholder tokens for a ``width x height`` page in view ``mode`` (separator included).

    v1: ``g * (g + 1)`` for the global view, ``rows*l * (cols*l + 1)`` for the stitched tiles,
    + 1, with ``g`` and ``l`` the views' token sides. v2: the global view's tokens, plus
    ``cols * rows`` times a tile's, + 1 (``ViewMode.view_tokens``).
    """
    mode = get_view_mode(mode)
    cols, rows = select_crop_grid(width, height, mode)
    if not mode.newlines:
        local = mode.view_tokens(mode.local_size) if cols else 0  # no tiles: cols = rows = 0
        return mode.view_tokens(mode.global_size) + cols * rows * local + 1
    g = mode.global_tokens_per_side
    l_side = mode.local_tokens_per_side if cols else 0
    return g * (g + 1) + rows * l_side * (cols * l_side + 1) + 1


def _token_side(n_tokens: int, what: str) -> int:
    side = math.isqrt(n_tokens)
    if side * side != n_tokens:
        raise ValueError(f"{what}: {n_tokens} tokens per view is not a square grid")
    return side


def _with_newlines(grid: torch.Tensor) -> torch.Tensor:
    """Row-major codes of a 2-D code grid with a newline code after each row."""
    newline = torch.full((grid.shape[0], 1), NEWLINE_CODE, dtype=grid.dtype)
    return torch.cat([grid, newline], dim=1).flatten()


# The cached index tensors outlive the call: build them as normal tensors even when the first
# call comes from inference mode, or later training steps could not save them for backward.
@lru_cache(maxsize=512)
@torch.inference_mode(False)
def _layout_template(
    n_global: int, n_local: int, cols: int, rows: int, newlines: bool
) -> torch.Tensor:
    """One page's sequence as codes into ``[its global tokens | its local tokens]``.

    Global token ``j`` has code ``j``, local token ``m`` (tile-major) code ``n_global + m``;
    the learned vectors have the negative codes above.
    """
    local_codes = n_global + torch.arange(cols * rows * n_local)
    global_codes = torch.arange(n_global)
    if newlines:
        g = _token_side(n_global, "global view")
        global_codes = _with_newlines(global_codes.view(g, g))
        if cols:
            side = _token_side(n_local, "local view")
            tiles = local_codes.view(rows, cols, side, side)
            local_codes = _with_newlines(tiles.permute(0, 2, 1, 3).reshape(rows * side, -1))
    separator = torch.tensor([SEPARATOR_CODE])
    return torch.cat([local_codes, global_codes, separator])


def _check_inputs(
    global_tokens: torch.Tensor,
    local_tokens: torch.Tensor | None,
    tiles: list[int],
    view_separator: torch.Tensor,
    image_newline: torch.Tensor | None,
) -> None:
    if global_tokens.ndim != 3:
        raise ValueError(f"global_tokens must be [B, N, D], got {tuple(global_tokens.shape)}")
    if len(tiles) != global_tokens.shape[0]:
        raise ValueError(f"{len(tiles)} crop grids for {global_tokens.shape[0]} global views")
    width = global_tokens.shape[-1]
    n_local = 0 if local_tokens is None else local_tokens.shape[0]
    if n_local != sum(tiles):
        raise ValueError(f"the crop grids need {sum(tiles)} local views, got {n_local}")
    if local_tokens is not None and (local_tokens.ndim != 3 or local_tokens.shape[-1] != width):
        raise ValueError(
            f"local_tokens must be [sum_k, N, {width}], got {tuple(local_tokens.shape)}"
        )
    for name, vector in (("view_separator", view_separator), ("image_newline", image_newline)):
        if vector is not None and tuple(vector.shape) != (width,):
            raise ValueError(f"{name} must be [{width}], got {tuple(vector.shape)}")


@lru_cache(maxsize=64)
@torch.inference_mode(False)
def _destinations(
    grids: tuple[tuple[int, int], ...],
    n_global: int,
    n_local: int,
    newlines: bool,
    device: torch.device,
) -> tuple[tuple[int, ...], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Page lengths, and the output rows of every global token, local token, separator, newline.

    Rows count in the concatenation of all pages' sequences; tokens are numbered as in the
    flattened ``global_tokens`` and ``local_tokens``.
    """
    templates = [_layout_template(n_global, n_local, cols, rows, newlines) for cols, rows in grids]
    lengths = tuple(len(t) for t in templates)
    codes = torch.cat(templates)
    position = torch.arange(len(codes))
    # Global tokens keep their order within a page, and pages follow each other.
    global_rows = position[(codes >= 0) & (codes < n_global)]
    # Stitched v1 tiles interleave, so each local token's row is scattered to its slot.
    is_local = codes >= n_global
    page = torch.repeat_interleave(torch.arange(len(grids)), torch.tensor(lengths))
    tiles_before = torch.tensor([0] + [cols * rows for cols, rows in grids[:-1]]).cumsum(0)
    slot = tiles_before[page[is_local]] * n_local + codes[is_local] - n_global
    local_rows = torch.empty_like(slot)
    local_rows[slot] = position[is_local]
    separator_rows = position[codes == SEPARATOR_CODE]
    newline_rows = position[codes == NEWLINE_CODE]
    moved = (t.to(device) for t in (global_rows, local_rows, separator_rows, newline_rows))
    return (lengths, *moved)


def assemble_image_embeddings(
    global_tokens: torch.Tensor,
    local_tokens: torch.Tensor | None,
    crop_grids: Sequence[tuple[int, int]],
    view_separator: torch.Tensor,
    image_newline: torch.Tensor | None,
) -> list[torch.Tensor]:
    """Per page, the ``[T_i, D]`` embeddings that fill its placeholders, in the official order.

    ``global_tokens``: ``[B, Ng, D]``; ``local_tokens``: ``[sum_i cols_i * rows_i, Nl, D]``
    page by page, tiles row-major (``None`` when no page has tiles); ``crop_grids[i]``:
    ``(cols, rows)`` or ``(0, 0)``. ``image_newline`` given: v1 layout, else v2 (module doc).
    Every vector is copied once, straight to its row of one buffer holding all pages; the
    returned sequences are consecutive slices of that buffer.
    """
    grids = tuple((int(cols), int(rows)) for cols, rows in crop_grids)
    tiles = [cols * rows for cols, rows in grids]
    _check_inputs(global_tokens, local_tokens, tiles, view_separator, image_newline)
    _, n_global, width = global_tokens.shape
    n_local = local_tokens.shape[1] if local_tokens is not None and sum(tiles) else 0
    newlines = image_newline is not None
    lengths, global_rows, local_rows, separator_rows, newline_rows = _destinations(
        grids, n_global, n_local, newlines, global_tokens.device
    )

    out = global_tokens.new_empty(sum(lengths), width)
    out.index_copy_(0, global_rows, global_tokens.flatten(0, 1))
    if n_local:
        out.index_copy_(0, local_rows, local_tokens.flatten(0, 1))
    separators = view_separator.to(out.dtype).expand(len(separator_rows), width)
    out.index_copy_(0, separator_rows, separators)
    if newlines:
        out.index_copy_(
            0, newline_rows, image_newline.to(out.dtype).expand(len(newline_rows), width)
        )
    return list(out.split(lengths))

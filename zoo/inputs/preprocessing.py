"""Page images -> normalised view tensors, in every view mode of DeepSeek-OCR and DeepSeek-OCR 2.

A page becomes one square *global* view and, in the tiled modes, a grid of square *local* tiles:

* global view: ``resize`` squashes the page to the view size (v1 Tiny, Small); ``pad`` scales
  the page so that its long side fits, keeping the aspect ratio, and centres it on a square of
  the mean colour (127, 127, 127) (v1 Base, Large, both Gundam modes, v2);
* local tiles (Gundam, Gundam-master, v2): when a side of the page exceeds ``crop_above``, the
  whole page is resized (aspect ratio not kept) to ``cols x rows`` tiles, the grid with
  ``min_crops <= cols * rows <= max_crops`` whose aspect ratio is closest to the page's; the
  tiles are cut from that resized page (not from the padded global view), row by row.

Every resize is PIL bicubic on the RGB page; pixels are scaled to [0, 1] and normalised with
mean = std = 0.5 per channel, bit for bit as ``ToTensor`` + ``Normalize`` in the official code.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from einops import rearrange
from PIL import ExifTags, Image, ImageOps

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
# The official code pads with the normalisation mean written as bytes: int(0.5 * 255) = 127.
PAD_COLOR = tuple(int(m * 255) for m in IMAGE_MEAN)
RESAMPLE = Image.Resampling.BICUBIC

NO_TILES = (0, 0)


@dataclass(frozen=True)
class ViewMode:
    """How a page is cut into views, and how those views are laid out as tokens.

    ``global_size``: side of the global view. ``global_fit``: ``"resize"`` (squash) or
    ``"pad"`` (keep the aspect ratio, pad with :data:`PAD_COLOR`). ``local_size``: side of the
    local tiles, ``None`` for a single-view mode. A page is tiled only when one of its sides
    exceeds ``crop_above`` (default ``local_size``), into ``min_crops..max_crops`` tiles; a
    chosen grid of one tile means no tiles, as in the official code. ``newlines``: v1 layout
    (a newline token after each row of each view) instead of v2's plain sequences.
    ``patch_size`` and ``downsample_ratio`` give the token grid of a view:
    ``ceil((size // patch_size) / downsample_ratio)`` tokens per side. ``token_ratio`` scales
    the tokens a view gives (v2 layout only): the query-count ablations read each view with
    ``token_ratio`` times as many queries as it has visual tokens.
    """

    name: str
    global_size: int
    global_fit: Literal["resize", "pad"] = "pad"
    local_size: int | None = None
    min_crops: int = 2
    max_crops: int = 6
    crop_above: int | None = None
    newlines: bool = True
    patch_size: int = 16
    downsample_ratio: int = 4
    token_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.token_ratio <= 0 or (self.newlines and self.token_ratio != 1):
            raise ValueError(
                f"view mode {self.name!r}: token_ratio must be > 0, and 1 with newline tokens "
                f"(a view is then a square grid); got {self.token_ratio}"
            )
        if self.global_fit not in ("resize", "pad"):
            raise ValueError(
                f"view mode {self.name!r}: global_fit must be 'resize' or 'pad', "
                f"got {self.global_fit!r}"
            )
        for field in ("global_size", "patch_size", "downsample_ratio"):
            if getattr(self, field) < 1:
                raise ValueError(f"view mode {self.name!r}: {field} must be >= 1")
        if self.global_size < self.patch_size:
            raise ValueError(
                f"view mode {self.name!r}: global_size {self.global_size} is smaller than "
                f"one patch ({self.patch_size})"
            )
        if self.local_size is not None:
            if self.local_size < self.patch_size:
                raise ValueError(
                    f"view mode {self.name!r}: local_size {self.local_size} is smaller than "
                    f"one patch ({self.patch_size})"
                )
            if not 1 <= self.min_crops <= self.max_crops:
                raise ValueError(
                    f"view mode {self.name!r}: need 1 <= min_crops <= max_crops, got "
                    f"min_crops={self.min_crops}, max_crops={self.max_crops}"
                )

    def tokens_per_side(self, view_size: int) -> int:
        """Side of the token grid the encoder makes of a ``view_size`` square view."""
        return math.ceil((view_size // self.patch_size) / self.downsample_ratio)

    def view_tokens(self, view_size: int) -> int:
        """Tokens the encoder gives one ``view_size`` view: the grid, times ``token_ratio``."""
        grid = self.tokens_per_side(view_size) ** 2
        return grid if self.token_ratio == 1 else max(1, round(self.token_ratio * grid))

    @property
    def global_tokens_per_side(self) -> int:
        return self.tokens_per_side(self.global_size)

    @property
    def local_tokens_per_side(self) -> int:
        if self.local_size is None:
            raise ValueError(f"view mode {self.name!r} has no local tiles")
        return self.tokens_per_side(self.local_size)

    @property
    def tiling_threshold(self) -> int | None:
        """Pages with both sides <= this get no tiles (``None``: the mode never tiles)."""
        if self.local_size is None:
            return None
        return self.local_size if self.crop_above is None else self.crop_above


# The official settings (DeepSeek-OCR: DeepSeek-OCR-hf modeling_deepseekocr.py `infer`,
# DeepSeek-OCR-vllm config.py and process/image_process.py; DeepSeek-OCR 2: config.py,
# process/image_process.py and modeling_deepseekocr2.py `infer`).
VIEW_MODES: dict[str, ViewMode] = {
    mode.name: mode
    for mode in (
        ViewMode("tiny", global_size=512, global_fit="resize"),
        ViewMode("small", global_size=640, global_fit="resize"),
        ViewMode("base", global_size=1024),
        ViewMode("large", global_size=1280),
        # HF `infer` tiles Gundam pages with dynamic_preprocess' defaults: 640 tiles, 2..9.
        ViewMode("gundam", global_size=1024, local_size=640, max_crops=9),
        # Only the vLLM code runs Gundam-master; it keeps the 640 tiling threshold.
        ViewMode("gundam_master", global_size=1280, local_size=1024, max_crops=9, crop_above=640),
        ViewMode("v2", global_size=1024, local_size=768, max_crops=6, newlines=False),
    )
}
DEFAULT_VIEW_MODE = "v2"


def get_view_mode(spec: ViewMode | str | Mapping[str, object] | None = None) -> ViewMode:
    """A :class:`ViewMode` from a preset name, a mapping or a mode (``None``: the v2 default).

    A mapping whose ``name`` is a preset overrides that preset's fields, e.g.
    ``{"name": "v2", "global_size": 256, "local_size": 192}`` for a tiny config; any other
    mapping must give every required field of :class:`ViewMode`.
    """
    if spec is None:
        spec = DEFAULT_VIEW_MODE
    if isinstance(spec, ViewMode):
        return spec
    if isinstance(spec, str):
        if spec not in VIEW_MODES:
            raise ValueError(f"unknown view mode {spec!r}; valid modes: {sorted(VIEW_MODES)}")
        return VIEW_MODES[spec]
    if isinstance(spec, Mapping):
        fields = dict(spec)
        unknown = set(fields) - {f.name for f in dataclasses.fields(ViewMode)}
        if unknown:
            raise ValueError(f"view mode {fields.get('name')!r}: unknown fields {sorted(unknown)}")
        preset = VIEW_MODES.get(str(fields.get("name")))
        return dataclasses.replace(preset, **fields) if preset else ViewMode(**fields)
    raise TypeError(f"a view mode is a name, a mapping or a ViewMode, got {type(spec).__name__}")


@lru_cache(maxsize=32)
def candidate_grids(min_crops: int, max_crops: int) -> tuple[tuple[int, int], ...]:
    """All ``(cols, rows)`` with ``min_crops <= cols * rows <= max_crops``, fewest tiles first."""
    grids = [
        (cols, rows)
        for cols in range(1, max_crops + 1)
        for rows in range(1, max_crops + 1)
        if min_crops <= cols * rows <= max_crops
    ]
    return tuple(sorted(grids, key=lambda grid: grid[0] * grid[1]))


def closest_aspect_grid(
    width: int, height: int, tile_size: int, min_crops: int, max_crops: int
) -> tuple[int, int]:
    """The ``(cols, rows)`` grid whose aspect ratio is closest to ``width / height``.

    Among equally close grids the search keeps the one with fewest tiles, unless the page area
    exceeds half the area of a larger tied grid's tiles; then the largest such grid wins
    (the InternVL rule of the official ``find_closest_aspect_ratio``). Two grids of equal tile
    count tie only halfway between their ratios, where for the official ranges (2..6, 2..9)
    another grid is always closer, so the order among equal counts does not matter there.
    """
    grids = candidate_grids(min_crops, max_crops)
    aspect = width / height
    distances = [abs(aspect - cols / rows) for cols, rows in grids]
    closest = min(distances)
    tied = [grid for grid, distance in zip(grids, distances, strict=True) if distance == closest]
    area = width * height
    larger = [g for g in tied[1:] if area > 0.5 * tile_size * tile_size * g[0] * g[1]]
    return larger[-1] if larger else tied[0]


def select_crop_grid(width: int, height: int, mode: ViewMode) -> tuple[int, int]:
    """``(cols, rows)`` of the local tiles of a ``width x height`` page; ``(0, 0)`` for none."""
    threshold = mode.tiling_threshold
    if threshold is None or (width <= threshold and height <= threshold):
        return NO_TILES
    grid = closest_aspect_grid(width, height, mode.local_size, mode.min_crops, mode.max_crops)
    return NO_TILES if grid == (1, 1) else grid


@dataclass
class ImageBatch:
    """The views of a batch of pages, ready for a vision encoder.

    ``global_views``: ``[B, 3, G, G]``, one per page. ``local_views``: ``[sum_i cols_i * rows_i,
    3, L, L]``, page by page, each page's tiles row-major; ``None`` when no page has tiles.
    ``crop_grids[i]``: ``(cols, rows)`` of page ``i``'s tiles, ``(0, 0)`` when it has none.
    """

    global_views: torch.Tensor
    local_views: torch.Tensor | None
    crop_grids: list[tuple[int, int]]

    def __post_init__(self) -> None:
        self.crop_grids = [(int(cols), int(rows)) for cols, rows in self.crop_grids]
        if self.global_views.ndim != 4 or self.global_views.shape[1] != 3:
            raise ValueError(
                f"global_views must be [B, 3, G, G], got {tuple(self.global_views.shape)}"
            )
        if len(self.crop_grids) != self.global_views.shape[0]:
            raise ValueError(
                f"{len(self.crop_grids)} crop grids for {self.global_views.shape[0]} global views"
            )
        if any((cols == 0) != (rows == 0) or min(cols, rows) < 0 for cols, rows in self.crop_grids):
            raise ValueError(
                f"crop grids must be (0, 0) or positive (cols, rows), got {self.crop_grids}"
            )
        n_local = 0 if self.local_views is None else self.local_views.shape[0]
        if n_local != sum(self.tiles_per_image):
            raise ValueError(
                f"crop grids {self.crop_grids} need {sum(self.tiles_per_image)} local views, "
                f"got {n_local}"
            )

    def __len__(self) -> int:
        return self.global_views.shape[0]

    @property
    def tiles_per_image(self) -> list[int]:
        return [cols * rows for cols, rows in self.crop_grids]

    def to(
        self,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        non_blocking: bool = False,
    ) -> ImageBatch:
        """The same views on ``device`` and/or in floating ``dtype``."""

        def move(views: torch.Tensor) -> torch.Tensor:
            return views.to(device=device, dtype=dtype, non_blocking=non_blocking)

        local = None if self.local_views is None else move(self.local_views)
        return ImageBatch(move(self.global_views), local, list(self.crop_grids))

    def select(self, pages: Sequence[int]) -> ImageBatch:
        """The views of ``pages`` (indices into this batch, repeats allowed), in that order:
        each page's global view, tiles and crop grid move together."""
        starts = [0, *itertools.accumulate(self.tiles_per_image)]
        tiles = [index for page in pages for index in range(starts[page], starts[page + 1])]
        local = None
        if self.local_views is not None and tiles:
            local = self.local_views[torch.tensor(tiles, device=self.local_views.device)]
        return ImageBatch(
            self.global_views[list(pages)], local, [self.crop_grids[page] for page in pages]
        )

    def pin_memory(self) -> ImageBatch:
        """Page-locked copy, used by ``DataLoader(pin_memory=True)``."""
        local = None if self.local_views is None else self.local_views.pin_memory()
        return ImageBatch(self.global_views.pin_memory(), local, list(self.crop_grids))

    @classmethod
    def concat(cls, batches: Sequence[ImageBatch]) -> ImageBatch:
        """One batch holding the pages of ``batches`` in order."""
        if not batches:
            raise ValueError("ImageBatch.concat needs at least one batch")
        sizes = {tuple(b.global_views.shape[1:]) for b in batches}
        if len(sizes) > 1:
            raise ValueError(f"cannot concatenate global views of different sizes {sorted(sizes)}")
        locals_ = [b.local_views for b in batches if b.local_views is not None]
        local_sizes = {tuple(v.shape[1:]) for v in locals_}
        if len(local_sizes) > 1:
            raise ValueError(
                f"cannot concatenate local views of different sizes {sorted(local_sizes)}"
            )
        return cls(
            torch.cat([b.global_views for b in batches]),
            torch.cat(locals_) if locals_ else None,
            [grid for b in batches for grid in b.crop_grids],
        )


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """``uint8 [..., 3, H, W]`` -> float32 ``(x / 255 - mean) / std``, as ToTensor + Normalize."""
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    pixels = pixels.to(torch.float32, memory_format=torch.contiguous_format)
    return pixels.div_(255).sub_(mean).div_(std)


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# EXIF orientations that swap width and height (rotated by 90 or 270 degrees, maybe mirrored)
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1: upright), read from the header without decoding pixels."""
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except (ValueError, TypeError, OSError):  # an unreadable EXIF block: take the page as stored
        return 1


def to_rgb_page(image: Image.Image) -> Image.Image:
    """A page as the model sees it, in RGB: turned upright by its EXIF orientation (as the
    official loaders' ``exif_transpose``), 16-bit grey scaled from 0..65535 to 0..255 (a plain
    ``convert("RGB")`` clips it to a blank white page) and transparency composited onto white
    (the official ``convert("RGB")`` drops alpha, so a transparent background turns black)."""
    if exif_orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:
        pixels = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        image = Image.fromarray(((pixels + 128) // 257).astype(np.uint8))
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        page = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(page, image.convert("RGBA")).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _as_rgb(image: object, index: int) -> Image.Image:
    """The page as an RGB PIL image (see :func:`to_rgb_page`)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"image {index}: expected a PIL.Image.Image, got {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise ValueError(f"image {index}: has zero size {image.width}x{image.height}")
    try:
        return to_rgb_page(image)
    except (ValueError, OSError) as err:
        raise ValueError(
            f"image {index}: cannot convert PIL mode {image.mode!r} to RGB ({err})"
        ) from err


def _hwc(image: Image.Image) -> torch.Tensor:
    """``uint8 [H, W, 3]`` pixels of an RGB image."""
    return torch.from_numpy(np.array(image, dtype=np.uint8))


def _global_view(page: Image.Image, mode: ViewMode) -> Image.Image:
    size = (mode.global_size, mode.global_size)
    if mode.global_fit == "resize":
        return page.resize(size, RESAMPLE)
    return ImageOps.pad(page, size, method=RESAMPLE, color=PAD_COLOR)


def _local_tiles(page: Image.Image, grid: tuple[int, int], tile: int) -> torch.Tensor:
    """``uint8 [cols * rows, 3, tile, tile]``: the page resized to the grid, cut row-major."""
    cols, rows = grid
    pixels = _hwc(page.resize((cols * tile, rows * tile), RESAMPLE))
    return rearrange(pixels, "(rows h) (cols w) c -> (rows cols) c h w", rows=rows, cols=cols)


def preprocess(
    images: Sequence[Image.Image], mode: ViewMode | str | Mapping[str, object] | None = None
) -> ImageBatch:
    """The global views and local tiles of ``images`` in view ``mode`` (see the module doc)."""
    mode = get_view_mode(mode)
    if len(images) == 0:
        raise ValueError("preprocess needs at least one image")
    pages = [_as_rgb(image, i) for i, image in enumerate(images)]
    grids = [select_crop_grid(page.width, page.height, mode) for page in pages]
    global_pixels = torch.stack([_hwc(_global_view(page, mode)) for page in pages])
    tiles = [
        _local_tiles(page, grid, mode.local_size)
        for page, grid in zip(pages, grids, strict=True)
        if grid != NO_TILES
    ]
    return ImageBatch(
        global_views=normalize_pixels(global_pixels.permute(0, 3, 1, 2)),
        local_views=normalize_pixels(torch.cat(tiles)) if tiles else None,
        crop_grids=grids,
    )

"""``python -m zoo.mask_pictures show NAME``: a registered attention mask as a picture and an
ASCII grid.

    python -m zoo.mask_pictures show causal_flow --visual 6 --queries 6
    python -m zoo.mask_pictures show causal_flow --views 3 --out page.png  # packed multi-crop page
    python -m zoo.mask_pictures show windowed_queries --arg window=3

The picture is drawn in the manner of the DeepSeek-OCR 2 paper's Figure 5: rows are attending
tokens, columns attended tokens, an allowed cell is coloured by the segment of the attended
token, a blocked cell is left blank, and lines mark segment and view boundaries.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from masks import BatchLayout, MaskSpec, dense_mask, pack
from masks.builtin import QUERY, VISUAL
from zoo.registry import MASKS, UnknownComponentError, create_mask

BLOCKED_RGB = (0.96, 0.96, 0.96)
SEGMENT_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def page_layout(visual: int, queries: int, views: int = 1) -> BatchLayout:
    """``views`` views of ``visual`` visual tokens and ``queries`` queries packed in one row."""
    view = [(VISUAL, visual)] + ([(QUERY, queries)] if queries else [])
    return pack(*[view] * views)


def segment_spans(layout: BatchLayout) -> list[tuple[int, str, int, int]]:
    """``(view, label, start, end)`` of every non-empty segment of the layout's first row."""
    spans, start = [], 0
    for view_number, view in enumerate(layout.rows[0]):
        for segment in view:
            if segment.length:
                spans.append((view_number, segment.label, start, start + segment.length))
                start += segment.length
    return spans


def ascii_grid(spec: MaskSpec, layout: BatchLayout) -> str:
    """The mask as text: ``#`` = may attend, ``.`` = blocked, a space column between segments,
    each row named by its view, segment initial and index within the segment."""
    if layout.batch_size != 1:
        raise ValueError(f"ascii_grid draws one sequence; got a batch of {layout.batch_size} rows")
    allowed = dense_mask(spec, layout)
    spans = segment_spans(layout)
    multi_view = len(layout.rows[0]) > 1

    def cells(row: torch.Tensor) -> str:
        return " ".join(
            "".join("#" if a else "." for a in row[start:end].tolist())
            for _, _, start, end in spans
        )

    def name(view: int, label: str, index: int) -> str:
        return (f"{view + 1}:" if multi_view else "") + f"{label[0]}{index}"

    names = [name(v, label, i) for v, label, start, end in spans for i in range(end - start)]
    width = max(len(n) for n in names)
    header = " ".join(label[0] * (end - start) for _, label, start, end in spans)
    lines = [f"{spec.name}: {describe(layout)}", f"{'':<{width}}  {header}"]
    lines += [f"{n:<{width}}  {cells(row)}" for n, row in zip(names, allowed, strict=True)]
    return "\n".join(lines)


def describe(layout: BatchLayout) -> str:
    """The one-row layout in words, e.g. ``"4 visual + 3 query | 4 visual + 3 query"``."""
    views = [" + ".join(f"{s.length} {s.label}" for s in view) for view in layout.rows[0]]
    return " | ".join(views)


def draw_mask(spec: MaskSpec, layout: BatchLayout, path: str | Path) -> Path:
    """Write the mask of ``spec`` over the one-row ``layout`` as a PNG at ``path``."""
    from matplotlib import colors
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    if layout.batch_size != 1:
        raise ValueError(f"draw_mask draws one sequence; got a batch of {layout.batch_size} rows")
    allowed = dense_mask(spec, layout)
    spans = segment_spans(layout)
    labels = list(dict.fromkeys(label for _, label, _, _ in spans))
    palette = {label: colors.to_rgb(SEGMENT_COLOURS[i % 6]) for i, label in enumerate(labels)}
    length = allowed.shape[0]
    key_colour = torch.empty(length, 3)
    for _, label, start, end in spans:
        key_colour[start:end] = torch.tensor(palette[label])
    image = torch.where(allowed[..., None], key_colour[None], torch.tensor(BLOCKED_RGB))

    size = min(12.0, 2.5 + 0.25 * length)
    figure = Figure(figsize=(size, size))
    axes = figure.subplots()
    axes.imshow(image.numpy(), interpolation="nearest", extent=(0, length, length, 0))
    if length <= 96:  # one line per cell while cells are big enough to see
        for edge in range(1, length):
            axes.axhline(edge, color="white", linewidth=0.6)
            axes.axvline(edge, color="white", linewidth=0.6)
    view_starts = {min(start for v, _, start, _ in spans if v == view) for view, *_ in spans}
    for _, _, start, _ in spans[1:]:
        width = 2.0 if start in view_starts else 1.0
        axes.axhline(start, color="black", linewidth=width)
        axes.axvline(start, color="black", linewidth=width)
    names = [
        (f"view {v + 1}\n" if len(layout.rows[0]) > 1 else "") + f"{label} ({end - start})"
        for v, label, start, end in spans
    ]
    middles = [(start + end) / 2 for _, _, start, end in spans]
    axes.set_xticks(middles, names, fontsize=8)
    axes.set_yticks(middles, names, fontsize=8)
    axes.xaxis.tick_top()
    axes.set_xlabel("attended token (key)")
    axes.set_ylabel("attending token (query)")
    axes.set_title(f"mask {spec.name!r}", pad=28 if len(layout.rows[0]) > 1 else 18)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path


def parse_mask_arguments(pairs: list[str]) -> dict[str, int | float | str]:
    """``["window=3"]`` -> ``{"window": 3}`` (numbers parsed, other values kept as text)."""
    arguments: dict[str, int | float | str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--arg expects KEY=VALUE, got {pair!r}")
        for parse in (int, float, str):
            try:
                arguments[key] = parse(value)
                break
            except ValueError:
                continue
    return arguments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.mask_pictures", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="draw a registered mask and print it as text")
    show.add_argument("name", help=f"a registered mask: {', '.join(MASKS.names())}")
    show.add_argument("--visual", type=int, default=6, help="visual tokens per view")
    show.add_argument("--queries", type=int, default=6, help="queries per view (0: none)")
    show.add_argument("--views", type=int, default=1, help="views packed in one sequence")
    show.add_argument(
        "--arg", action="append", default=[], metavar="KEY=VALUE", help="mask argument"
    )
    show.add_argument("--out", help="PNG path (default: mask_<name>[_<views>views].png here)")
    args = parser.parse_args(argv)
    if args.visual < 1 or args.queries < 0 or args.views < 1:
        parser.error(
            f"need --visual >= 1, --queries >= 0 and --views >= 1, got {args.visual}, "
            f"{args.queries}, {args.views}"
        )
    try:
        spec = create_mask(args.name, **parse_mask_arguments(args.arg))
    except (TypeError, ValueError, UnknownComponentError) as err:
        parser.error(str(err))
    layout = page_layout(args.visual, args.queries, args.views)
    default_name = f"mask_{args.name}" + (f"_{args.views}views" if args.views > 1 else "")
    path = draw_mask(spec, layout, args.out or f"{default_name}.png")
    print(ascii_grid(spec, layout))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

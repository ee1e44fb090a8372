"""``python -m zoo.mask_pictures show``: the ASCII grid is the compiled mask, the PNG is written and
coloured by segment, for every registered mask and for a packed multi-view page."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import colors
from PIL import Image

from masks import dense_mask
from zoo.mask_pictures import SEGMENT_COLOURS, ascii_grid, main, page_layout, parse_mask_arguments
from zoo.registry import MASKS, create_mask


def grid_cells(text: str) -> torch.Tensor:
    """The ``#``/``.`` cells of an ASCII grid as a boolean matrix."""
    rows = [line.split(None, 1)[1].replace(" ", "") for line in text.splitlines()[2:]]
    return torch.tensor([[c == "#" for c in row] for row in rows])


def colour_pixels(path, hex_colour: str) -> int:
    """How many pixels of the PNG have (nearly) the given colour."""
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    target = np.array(colors.to_rgb(hex_colour)) * 255
    return int((np.abs(pixels - target).max(-1) < 8).sum())


@pytest.mark.parametrize("name", MASKS.names())
def test_show_prints_the_mask_and_writes_a_png(name, tmp_path, capsys):
    out = tmp_path / f"{name}.png"
    main(["show", name, "--visual", "3", "--queries", "4", "--out", str(out)])
    printed = capsys.readouterr().out
    grid = printed.rsplit("\nwrote ", 1)[0]
    expected = dense_mask(create_mask(name), [("visual", 3), ("query", 4)])
    assert torch.equal(grid_cells(grid), expected)
    assert Image.open(out).size[0] > 200
    visual_cells, query_cells = (
        colour_pixels(out, SEGMENT_COLOURS[0]),
        colour_pixels(out, SEGMENT_COLOURS[1]),
    )
    assert visual_cells > 0
    # a query-coloured cell appears exactly when some token may attend to a query
    assert (query_cells > 0) == bool(expected[:, 3:].any())


def test_a_packed_page_is_block_diagonal_and_named_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["show", "causal_flow", "--visual", "2", "--queries", "2", "--views", "3"])
    printed = capsys.readouterr().out
    assert (tmp_path / "mask_causal_flow_3views.png").is_file()
    single = dense_mask(create_mask("causal_flow"), [("visual", 2), ("query", 2)])
    assert torch.equal(
        grid_cells(printed.rsplit("\nwrote ", 1)[0]), torch.block_diag(*[single] * 3)
    )
    assert "3:q1" in printed  # rows are named by view, segment and index


def test_the_ascii_grid_of_causal_flow_spelled_out():
    text = ascii_grid(create_mask("causal_flow"), page_layout(2, 3))
    assert text.splitlines() == [
        "causal_flow: 2 visual + 3 query",
        "    vv qqq",
        "v0  ## ...",
        "v1  ## ...",
        "q0  ## #..",
        "q1  ## ##.",
        "q2  ## ###",
    ]


def test_mask_arguments_are_parsed_and_checked(tmp_path, capsys):
    assert parse_mask_arguments(["window=3", "scale=0.5", "kind=a"]) == {
        "window": 3,
        "scale": 0.5,
        "kind": "a",
    }
    main(
        [
            "show",
            "windowed_queries",
            "--queries",
            "4",
            "--arg",
            "window=2",
            "--out",
            str(tmp_path / "w.png"),
        ]
    )
    assert "q3  ###### ..##" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--arg expects KEY=VALUE, got 'window'"):
        parse_mask_arguments(["window"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "nope"], "unknown mask 'nope'; valid masks: bidirectional"),
        (["show", "causal", "--arg", "window=2"], "unexpected keyword argument 'window'"),
        (["show", "causal", "--views", "0"], "need --visual >= 1, --queries >= 0 and --views >= 1"),
    ],
)
def test_bad_command_lines_exit_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err

"""Suite ``fullsize`` (run only when named): the released DeepSeek-OCR 2 configuration (3.39B
parameters) on this CPU in bfloat16 and int8, each side loaded from one folder.

A folder in the released layout (``config.json``, bfloat16 tensors under the release's names,
sharded with an index) is written once with random weights (:func:`write_random_release`); then
one process per side (:mod:`zoo.bench.fullsize_worker`) loads it and runs one page of 6 crops +
the global view: the zoo in bfloat16, transformers' model in bfloat16, the zoo with weight-only
int8 decoder layers, one after the other with the same thread count. Rows: load time, peak RSS
(the process's, load and page included), the page (vision + prefill, greedy generation of one
token), decode time per token after it (``(whole page - page) / (new tokens - 1)``) and the whole
page of ``--page-tokens`` new tokens. bfloat16 rows compare the zoo with transformers; int8 rows
compare the int8 zoo with the bfloat16 zoo (their reference column). The decode rows end with
the bandwidth bound: bytes one step reads (:func:`zoo.bench.measure.bytes_per_token`) / the
highest read bandwidth measured in the run, over the measured time per token. The run also
estimates one OmniDocBench v1.5 evaluation (1355 pages) at the measured whole-page rate.

``--fullsize-model reduced`` runs the same code on the released layout scaled down (tiny encoder,
a 3-layer decoder of width 256 with 16 experts) in seconds; ``--fullsize-folder DIR`` keeps the
written folder (and reuses it when it already holds that model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from zoo.bench.context import BenchContext, comparison
from zoo.bench.decode import seconds_per_token
from zoo.bench.machine import BANDWIDTH_BYTES
from zoo.bench.measure import Stats, time_interleaved
from zoo.bench.models import (
    FULL_ENCODER,
    TINY_ENCODER,
    ModelSize,
    build_config,
    image_token_id,
    write_random_release,
)
from zoo.io.convert.official_checkpoint import official_config

OMNIDOCBENCH_PAGES = 1355
FULLSIZE_MODELS = {
    "full": ModelSize("full", FULL_ENCODER, {}),
    "reduced": ModelSize(
        "reduced",
        TINY_ENCODER,
        {
            "vocab_size": 4096,
            "hidden_size": 256,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "intermediate_size": 512,
            "n_routed_experts": 16,
            "moe_intermediate_size": 128,
        },
    ),
}
# each side: its process's extra arguments
SIDES = {"zoo": [], "transformers": [], "zoo int8": ["--quantize", "int8"]}


def release_folder(folder: Path, size: ModelSize) -> Path:
    """``folder`` holding ``size`` in the released layout: written unless it already holds
    exactly that model; a folder holding another model is refused."""
    config = official_config(build_config(size), image_token_id(size))
    written = folder / "config.json"
    if written.is_file() and (folder / "model.safetensors.index.json").is_file():
        if json.loads(written.read_text()) != json.loads(json.dumps(config)):
            raise ValueError(
                f"{folder} holds another model than the {size.name!r} one; give an empty or "
                "new --fullsize-folder"
            )
        return folder
    return write_random_release(folder, size)


def run_side(ctx: BenchContext, folder: Path, side: str, page_tokens: int) -> dict[str, Any]:
    """One :mod:`zoo.bench.fullsize_worker` process; its JSON result. At least one untimed
    page comes first even in a quick run: the decode time is the whole page's minus a page's."""
    command = [
        sys.executable, "-m", "zoo.bench.fullsize_worker", str(folder),
        "--side", side.split()[0], *SIDES[side], "--threads", str(ctx.threads),
        "--repeats", str(ctx.repeats), "--warmup", str(max(1, ctx.warmup)),
        "--page-tokens", str(page_tokens),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(ctx.threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the {side} process failed:\n{done.stderr[-3000:]}")
    print(f"[fullsize: {side} done]", flush=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_bandwidth(ctx: BenchContext) -> Stats:
    """GB/s of a sum over a tensor far larger than the caches, with the run's threads."""
    source = torch.randn(BANDWIDTH_BYTES // (16 if ctx.tiny else 1) // 4)
    seconds = time_interleaved({"read": source.sum}, ctx.repeats, ctx.warmup)["read"]
    return seconds.inverted(source.numel() * 4 / 1e9, "GB/s")


def side_stats(rounds: list[dict[str, Any]]) -> dict[str, Stats]:
    """The figures of one side's worker results (one per round) as :class:`Stats`; each round's
    decode time is its whole page less its own median page."""
    new_tokens = rounds[0]["page_tokens"] - 1
    pages = [Stats.of(result["page_s"], "s").median for result in rounds]
    wholes = [result["whole_page_s"] for result in rounds]
    return {
        "load": Stats.of([result["load_s"] for result in rounds], "s"),
        "rss": Stats.of([result["peak_rss"] / 2**30 for result in rounds], "GiB"),
        "page": Stats.of([t for result in rounds for t in result["page_s"]], "s"),
        "decode": seconds_per_token(wholes, pages, new_tokens).scaled(1e3, "ms/token"),
        "whole": Stats.of(wholes, "s"),
    }


def same_tokens(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Fraction of positions where two greedy pages chose the same token."""
    pairs = list(zip(a["tokens"], b["tokens"], strict=True))
    return sum(x == y for x, y in pairs) / len(pairs)


def comparison_rows(
    label: str,
    side: dict[str, Stats],
    reference: dict[str, Stats],
    targets: dict[str, str],
    page_tokens: int,
) -> list[dict[str, Any]]:
    """Load, peak RSS, page, decode per token and whole page of ``side`` against
    ``reference``."""
    cases = {
        "load": "load from the folder",
        "rss": "peak RSS (load, page, whole page)",
        "page": "page, 6 crops + global: vision + prefill",
        "decode": "decode per token after the page",
        "whole": f"whole page, {page_tokens} new tokens",
    }
    return [
        comparison(f"{label}: {case}", side[key], reference[key], targets.get(key))
        for key, case in cases.items()
    ]


def bandwidth_row(label: str, result: dict[str, Any], decode: Stats, read: Stats) -> dict:
    """The decode step's share of the bandwidth bound: bytes per token over the highest read
    bandwidth of the run (a slow reading would flatter the share)."""
    bound_ms = result["decode_bytes_per_token"] / (read.max * 1e9) * 1e3
    fraction = bound_ms / decode.median
    gigabytes = result["decode_bytes_per_token"] / 1e9
    return {
        "case": f"{label}: {gigabytes:.2f} GB read per token, bandwidth-bound time / measured",
        "zoo": decode.as_dict(),
        "ratio": fraction,
        "target": ">= 0.6",
        "met": fraction >= 0.6,
    }


def run(ctx: BenchContext) -> dict[str, Any]:
    size = FULLSIZE_MODELS["reduced" if ctx.tiny else ctx.fullsize_model]
    page_tokens = 8 if ctx.tiny else ctx.page_tokens
    with tempfile.TemporaryDirectory(prefix="zoo_fullsize_") as scratch:
        folder = release_folder(ctx.fullsize_folder or Path(scratch) / "release", size)
        bandwidths, rounds = [], {side: [] for side in SIDES}
        for _ in range(max(1, ctx.fullsize_rounds)):
            bandwidths.append(read_bandwidth(ctx).median)
            for side in SIDES:
                rounds[side].append(run_side(ctx, folder, side, page_tokens))
    read = Stats.of(bandwidths, "GB/s")
    results = {side: side_rounds[0] for side, side_rounds in rounds.items()}
    stats = {side: side_stats(side_rounds) for side, side_rounds in rounds.items()}
    rows = [
        *comparison_rows(
            "bf16 zoo vs transformers",
            stats["zoo"],
            stats["transformers"],
            {"rss": "<= 0.6", "page": "<= 0.8", "decode": "<= 0.7"},
            page_tokens,
        ),
        *comparison_rows(
            "int8 zoo vs bf16 zoo",
            stats["zoo int8"],
            stats["zoo"],
            {"rss": "<= 0.6", "decode": "<= 0.6"},
            page_tokens,
        ),
        bandwidth_row("bf16 decode", results["zoo"], stats["zoo"]["decode"], read),
        bandwidth_row("int8 decode", results["zoo int8"], stats["zoo int8"]["decode"], read),
        {"case": "memory read bandwidth", "zoo": read.as_dict()},
    ]
    hours = {
        side: OMNIDOCBENCH_PAGES * stats[side]["whole"].median / 3600
        for side in ("zoo", "zoo int8")
    }
    return {
        "rows": rows,
        "model": size.describe(),
        "folder": str(folder) if ctx.fullsize_folder else None,
        "page_tokens": page_tokens,
        "same_tokens_zoo_vs_transformers": same_tokens(results["zoo"], results["transformers"]),
        "same_tokens_int8_vs_bf16": same_tokens(results["zoo int8"], results["zoo"]),
        "omnidocbench_v15_hours_at_this_rate": hours,
        "rounds": len(bandwidths),
        "sides": results,
        "later_rounds": {side: side_rounds[1:] for side, side_rounds in rounds.items()},
    }

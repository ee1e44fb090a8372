"""``python -m zoo.bench [SUITE ...]``: time the zoo against transformers' DeepSeek-OCR 2 on the
same random weights, side by side in one process, and against this machine's limits.

Suites: vision, prefill, decode, train, eval, moe, masks, ablations, machine (default: all, in
that order; ``machine`` reads ``vision`` and ``decode`` of the same run; ``ablations`` times the
zoo against itself without one optimisation), and ``fullsize``, run only when named: the
released configuration in bfloat16 and int8, each side in its own process loading one folder
(:mod:`zoo.bench.fullsize`). Each figure is the median of
``--repeats`` runs after ``--warmup`` untimed ones, with min and max. Ratios are zoo /
transformers of the medians (lower is faster for times and memory; throughputs say higher is
better). Results go to ``--output`` as JSON and to stdout as a table.

    python -m zoo.bench                      # everything, full-size encoders (slow on a CPU)
    python -m zoo.bench vision --repeats 7
    python -m zoo.bench --quick              # tiny models, one run each: a smoke test
    python -m zoo.bench fullsize             # 3.39B parameters: writes a 6.8 GB folder first
    python -m zoo.bench fullsize --fullsize-model reduced   # the same path in seconds
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers

from zoo.bench.context import BenchContext
from zoo.bench.measure import PEAK_MEMORY_METHOD, set_threads

SUITES = ("vision", "prefill", "decode", "train", "eval", "moe", "masks", "ablations", "machine")
ON_REQUEST = ("fullsize",)  # run only when named
MODULES = {"eval": "evaluation", "masks": "mask_building"}


def run_suites(
    ctx: BenchContext, suites: list[str], on_suite_done: Callable[[], object] | None = None
) -> dict[str, Any]:
    """Run ``suites`` in :data:`SUITES` order; their results are also kept in ``ctx.results``.
    ``on_suite_done`` is called after each (the CLI rewrites its JSON, so a long run that is
    stopped keeps what it measured)."""
    unknown = [name for name in suites if name not in SUITES + ON_REQUEST]
    if unknown:
        raise ValueError(f"unknown suites {unknown}; valid: {list(SUITES + ON_REQUEST)}")
    for name in [s for s in SUITES + ON_REQUEST if s in suites]:
        module = importlib.import_module(f"zoo.bench.{MODULES.get(name, name)}")
        start = time.perf_counter()
        ctx.results[name] = module.run(ctx)
        ctx.results[name]["wall_s"] = time.perf_counter() - start
        print(f"[{name}: {ctx.results[name]['wall_s']:.0f} s]", flush=True)
        if on_suite_done is not None:
            on_suite_done()
    return ctx.results


def _figure(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "-"
    text = f"{stats['median']:.4g} {stats['unit']}"
    if stats.get("runs", 1) > 1:
        text += f" [{stats['min']:.4g}-{stats['max']:.4g}]"
    return text


def format_table(results: dict[str, Any]) -> str:
    """Text table of every row: suite, case, zoo and transformers figures, ratio, target."""
    header = ("suite", "case", "zoo median [min-max]", "transformers", "ratio", "target")
    lines = [header]
    for suite, result in results.items():
        for row in result["rows"]:
            ratio = row.get("ratio")
            target = row.get("target") or ""
            if target:
                target += " ok" if row.get("met") else " MISSED"
            lines.append(
                (
                    suite,
                    row["case"],
                    _figure(row.get("zoo")),
                    _figure(row.get("transformers")),
                    "-" if ratio is None else f"{ratio:.2f}",
                    target,
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def environment(ctx: BenchContext) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "threads": ctx.threads,
        "dtype": "float32",
        "device": "cpu",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "suites", nargs="*", metavar="SUITE", help=f"any of {', '.join(SUITES + ON_REQUEST)}"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 5)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument(
        "--decoder-layers", type=int, default=3, help="layers of the reduced real-width decoder"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny models, 1 run, no warm-up (smoke test)"
    )
    parser.add_argument(
        "--fullsize-model",
        choices=["full", "reduced"],
        default="full",
        help="fullsize: the released configuration, or it scaled down (seconds)",
    )
    parser.add_argument(
        "--fullsize-folder",
        type=Path,
        default=None,
        help="fullsize: keep the released-layout folder here (reused when it holds the model)",
    )
    parser.add_argument(
        "--fullsize-rounds",
        type=int,
        default=2,
        help="fullsize: run the sides in turn this many times (1 in a --quick run)",
    )
    parser.add_argument(
        "--page-tokens", type=int, default=512, help="fullsize: new tokens of the whole page"
    )
    parser.add_argument(
        "--output", type=Path, default=Path("bench_results.json"), help="JSON file to write"
    )
    args = parser.parse_args(argv)
    default_repeats, default_warmup = (1, 0) if args.quick else (5, 1)
    ctx = BenchContext(
        repeats=default_repeats if args.repeats is None else args.repeats,
        warmup=default_warmup if args.warmup is None else args.warmup,
        threads=args.threads,
        tiny=args.quick,
        decoder_layers=args.decoder_layers,
        fullsize_model=args.fullsize_model,
        fullsize_folder=args.fullsize_folder,
        fullsize_rounds=1 if args.quick else args.fullsize_rounds,
        page_tokens=args.page_tokens,
    )
    set_threads(ctx.threads)
    args.output.parent.mkdir(parents=True, exist_ok=True)

    def write_report() -> dict[str, Any]:
        report = {
            "settings": {
                "suites": list(ctx.results),
                "repeats": ctx.repeats,
                "warmup": ctx.warmup,
                "tiny": ctx.tiny,
                "decoder_layers": ctx.decoder_layers,
                "models": {name: ctx.size(name).describe() for name in ("main", "medium", "eval")},
            },
            "environment": environment(ctx),
            "peak_memory_method": PEAK_MEMORY_METHOD,
            "suites": ctx.results,
        }
        args.output.write_text(json.dumps(report, indent=2, default=str))
        return report

    results = run_suites(ctx, args.suites or list(SUITES), write_report)
    report = write_report()
    print(format_table(results))
    print(f"peak memory: {PEAK_MEMORY_METHOD}")
    print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()

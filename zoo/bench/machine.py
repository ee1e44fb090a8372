"""Suite ``machine``: this machine's limits, measured here with the run's thread count, and how
close the zoo gets to them.

* dense matmul: ``torch.mm`` of two float32 ``n x n`` matrices, ``2 n^3`` FLOPs a call;
* memory bandwidth: read (``sum`` over a tensor far larger than the caches) and copy (one read
  plus one write per byte);
* encoder: FLOPs of the 1024-view encode (``vision``) / its median time, over the matmul peak;
* decode: bytes one step reads (``decode``) / read bandwidth = the bandwidth-bound step time,
  over the measured median step time.
The last two need the ``vision`` and ``decode`` suites in the same run (``None`` otherwise).
"""

from __future__ import annotations

from typing import Any

import torch

from zoo.bench.context import BenchContext
from zoo.bench.measure import Stats, time_interleaved

MATMUL_SIDE = 2048
BANDWIDTH_BYTES = 512 * 2**20


def run(ctx: BenchContext) -> dict[str, Any]:
    side = 512 if ctx.tiny else MATMUL_SIDE
    size = BANDWIDTH_BYTES // (16 if ctx.tiny else 1)
    a, b = torch.randn(side, side), torch.randn(side, side)
    source, target = torch.randn(size // 4), torch.empty(size // 4)
    times = time_interleaved(
        {
            "matmul": lambda: torch.mm(a, b),
            "read": lambda: source.sum(),
            "copy": lambda: target.copy_(source),
        },
        ctx.repeats,
        ctx.warmup,
    )
    matmul = times["matmul"].inverted(2 * side**3 / 1e9, "GFLOP/s")
    read = times["read"].inverted(size / 1e9, "GB/s")
    copy = times["copy"].inverted(2 * size / 1e9, "GB/s")
    rows = [
        {"case": f"matmul {side}x{side} fp32", "zoo": matmul.as_dict()},
        {"case": "memory read bandwidth", "zoo": read.as_dict()},
        {"case": "memory copy bandwidth", "zoo": copy.as_dict()},
    ]
    summary: dict[str, Any] = {
        "matmul_gflops": matmul.median,
        "read_gbps": read.median,
        "copy_gbps": copy.median,
        "encoder_fraction_of_matmul_peak": None,
        "decode_fraction_of_bandwidth_bound": None,
    }
    vision = ctx.results.get("vision")
    if vision is not None:
        row = vision["rows"][0]
        achieved = Stats(**row["zoo"]).inverted(row["flops"] / 1e9, "GFLOP/s")
        fraction = achieved.median / matmul.median
        summary["encoder_fraction_of_matmul_peak"] = fraction
        rows.append(
            {
                "case": f"encoder ({row['case'].split(':')[0]}): achieved GFLOP/s, share of peak",
                "zoo": achieved.as_dict(),
                "ratio": fraction,
                "target": ">= 0.6",
                "met": fraction >= 0.6,
            }
        )
    decode = ctx.results.get("decode")
    if decode is not None:
        bound = decode["bytes_per_token"] / (read.median * 1e9)
        step = Stats(**decode["rows"][0]["zoo"])
        fraction = bound / step.median
        summary["decode_fraction_of_bandwidth_bound"] = fraction
        rows.append(
            {
                "case": (
                    f"decode: {decode['bytes_per_token'] / 1e9:.2f} GB read per token, "
                    "bandwidth-bound time / measured"
                ),
                "zoo": step.as_dict(),
                "ratio": fraction,
                "target": ">= 0.6",
                "met": fraction >= 0.6,
            }
        )
    return {"rows": rows, **summary}

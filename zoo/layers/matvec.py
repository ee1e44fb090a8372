"""The zoo's CPU decode kernels (``csrc/matvec.cpp``): one row times a bfloat16 or weight-only
int8 matrix, and one token through a mixture-of-experts layer's chosen experts.

Why by hand: a decode step reads every active weight once, so its speed is the speed at which
its products stream weights from memory, plus what it spends between them. Measured here (2
threads, cold weights of the release's decoder, a shared machine whose bandwidth varies by 2x
from hour to hour): ``torch._weight_int8pack_mm`` reads 12-14 GB/s of int8 weights, the int8
kernel 15-18 (it prefetches each row ahead); ``torch.mv`` reads bfloat16 weights at 9-20 GB/s,
the bfloat16 kernel as fast when the machine is quiet and 1.25x faster when it is not. Between
products, the eager experts layer spends some 40 tensor operations per token (sort, count,
gather, a Python loop over the chosen experts, scatter-add), which the fused call replaces.
Together: a decode step of the released model took 149 ms instead of 178 in bfloat16 and 82
instead of 115 in int8 (one busy hour; ``python -m zoo.bench fullsize`` measures the model).
Prefetching 16 KB ahead into L2 rather than 2 KB into L1, and the chosen experts' products in one
parallel region, then took it from 105.6 to 87.7 ms in bfloat16 and from 77.3 to 64.9 in int8
(old and new kernels alternated five times in one process, medians).

The kernels need an x86 CPU with AVX-512 BF16 and a C++ compiler: the source is compiled once
per machine by torch's extension builder (10-30 s, cached under ``TORCH_EXTENSIONS_DIR``).
Without either, or with ``ZOO_CPU_KERNELS=0``, :func:`kernels` returns ``None`` and the callers
use torch's kernels.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "matvec.cpp"
SWITCH = "ZOO_CPU_KERNELS"
# -fopenmp: at::parallel_for is inline and splits the rows among torch's OpenMP threads only
# when the extension itself is built with OpenMP (it then shares torch's libgomp)
COMPILE_FLAGS = ["-O3", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16"]


def cpu_supports_kernels() -> bool:
    """Whether this CPU runs the kernels' instructions (AVX-512 with BF16)."""
    return torch.cpu._is_avx512_bf16_supported()


@functools.cache
def kernels() -> Any | None:
    """The loaded kernels (``torch.ops.zoo_matvec``), built on first use; ``None`` where they
    cannot run (see the module doc), with a warning when the build itself failed."""
    if os.environ.get(SWITCH, "1") == "0" or not cpu_supports_kernels():
        return None
    from torch.utils.cpp_extension import load

    log.info("building the zoo's CPU decode kernels (once per machine, 10-30 s)")
    try:
        load(
            name="zoo_matvec",
            sources=[str(SOURCE)],
            extra_cflags=COMPILE_FLAGS,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
        )
    except Exception as error:  # noqa: BLE001 - any build failure means: use torch's kernels
        lines = str(error).splitlines() or [repr(error)]
        reason = next((line for line in lines if "error:" in line), lines[0])
        warnings.warn(
            f"the zoo's CPU decode kernels did not build ({reason.strip()}); decoding uses "
            f"torch's kernels, 1.2-1.4x slower here (set {SWITCH}=0 to skip the build)",
            stacklevel=2,
        )
        return None
    return torch.ops.zoo_matvec


def runs_here(x: torch.Tensor) -> bool:
    """Whether a product with input ``x`` can go to the kernels: one bfloat16 row on a CPU where
    they run, with gradients off (the kernels have no backward)."""
    return (
        not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.bfloat16
        and x.shape[:-1].numel() == 1
        and kernels() is not None
    )


def bf16_matvec(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` for one bfloat16 row ``x`` (any shape of ``in`` elements; the result
    keeps it, with ``out`` last) and a row-major bfloat16 ``weight`` ``[out, in]``."""
    out = kernels().matvec_bf16(weight, x.reshape(-1).contiguous())
    return out.reshape(*x.shape[:-1], weight.shape[0])


def int8_matvec(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x @ (weight * scale[:, None]).T`` for one bfloat16 row ``x`` (any shape of ``in``
    elements; the result keeps it, with ``out`` last), a row-major int8 ``weight``
    ``[out, in]`` and its bfloat16 ``scale`` ``[out]``."""
    out = kernels().matvec_int8(weight, scale, x.reshape(-1).contiguous())
    return out.reshape(*x.shape[:-1], weight.shape[0])


def moe_experts(
    x: torch.Tensor,
    gate_up: torch.Tensor,
    down: torch.Tensor,
    expert_ids: torch.Tensor,
    weights: torch.Tensor,
    scales: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One token's mixture of SwiGLU experts, ``sum_k weights[k] * down_e(silu(gate_e x) *
    up_e x)`` over its chosen ``expert_ids``, as one call: ``x`` ``[1, H]`` bfloat16;
    ``gate_up`` ``[E, 2M, H]`` (each expert's gate rows, then its up rows) and ``down``
    ``[E, H, M]``, contiguous, bfloat16 or (with their bfloat16 ``scales`` ``[E, 2M]`` and
    ``[E, H]``) int8. Returns ``[1, H]`` bfloat16, rounded where the eager layer rounds."""
    gate_up_scale, down_scale = scales if scales is not None else (None, None)
    out = kernels().moe_experts(
        x.reshape(-1).contiguous(),
        gate_up,
        gate_up_scale,
        down,
        down_scale,
        expert_ids.reshape(-1).long().contiguous(),
        weights.reshape(-1).float().contiguous(),
    )
    return out.reshape(x.shape)

"""How the benchmark measures: interleaved wall-clock repeats, peak tensor memory, the bytes a
decode step reads (:func:`bytes_per_token`) and a process's peak resident set
(:func:`zoo.io.load.peak_rss_bytes`, for the ``fullsize`` suite, one process per side).

Both sides of a comparison run in the same process, alternating call by call (zoo, transformers,
zoo, ...), so a load spike from other processes on a shared machine hits both about equally;
ratios are therefore steadier than either absolute figure.

Peak memory is the high-water mark of live tensor bytes allocated *during* one call (weights and
inputs allocated before it do not count), read from the allocation and free events that
``torch.profiler`` records with ``profile_memory=True``. It counts what the implementation
allocates, independent of the C allocator's caching and of other processes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from decoders.moe import MoEFeedForward

PEAK_MEMORY_METHOD = (
    "peak of live tensor bytes allocated during one call, from torch.profiler memory events "
    "(weights and inputs allocated before the call excluded)"
)


@dataclass
class Stats:
    """Median, min and max of ``runs`` measurements, in ``unit``."""

    median: float
    min: float
    max: float
    runs: int
    unit: str

    @classmethod
    def of(cls, values: list[float], unit: str) -> Stats:
        return cls(statistics.median(values), min(values), max(values), len(values), unit)

    def scaled(self, factor: float, unit: str) -> Stats:
        """The same figures times ``factor`` (``factor < 0`` is refused: it would swap min/max)."""
        if factor < 0:
            raise ValueError(f"scale factor must be >= 0, got {factor}")
        return Stats(self.median * factor, self.min * factor, self.max * factor, self.runs, unit)

    def inverted(self, numerator: float, unit: str) -> Stats:
        """``numerator / x`` of each figure (seconds -> a rate); min and max swap places."""
        return Stats(
            numerator / self.median, numerator / self.max, numerator / self.min, self.runs, unit
        )

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def sample_interleaved(
    calls: Mapping[str, Callable[[], object]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds of each call of each named callable: ``warmup`` untimed rounds, then ``repeats``
    rounds, each calling every callable once in turn."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return samples


def time_interleaved(
    calls: Mapping[str, Callable[[], object]], repeats: int, warmup: int
) -> dict[str, Stats]:
    """:func:`sample_interleaved` summarised as seconds per call."""
    samples = sample_interleaved(calls, repeats, warmup)
    return {name: Stats.of(values, "s") for name, values in samples.items()}


def peak_tensor_bytes(call: Callable[[], object]) -> int:
    """High-water mark of tensor bytes allocated during ``call`` (see the module doc)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer of ``module`` (int8 weights and their scales
    included)."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def bytes_per_token(decoder: torch.nn.Module, context: float) -> float:
    """Bytes a decode step reads at ``context`` cached positions, in the decoder's own
    precision(s): every tensor once, except the routed experts a token does not pick and all
    but one row of the embedding table, plus the cached keys and values."""
    total = tensor_bytes(decoder)
    for module in decoder.modules():
        if isinstance(module, MoEFeedForward):
            unused = module.experts.num_experts - module.router.top_k
            total -= tensor_bytes(module.experts) * unused / module.experts.num_experts
    embedding = decoder.embed_tokens.weight
    if decoder.lm_head.weight is not embedding:
        total -= embedding.numel() * embedding.element_size() * (1 - 1 / embedding.shape[0])
    kv = 2 * len(decoder.layers) * context * decoder.hidden_size * embedding.element_size()
    return total + kv


def set_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads for every side of every comparison."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)

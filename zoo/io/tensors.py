"""Tensors in and out of modules: every tensor of a safetensors folder (mapped, not copied), fitted
to a model's dtypes, layouts and int8 weights, and a strict copy into a module that names what is
missing, unexpected or mis-shaped."""

from __future__ import annotations

import json
import math
import mmap
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from zoo.io.convert.deepseek_decoder import ExpertRows, stack_experts
from zoo.io.folder import CheckpointFormatError, read_json_object
from zoo.layers.int8 import SCALE_SUFFIX, quantize_per_channel


class InitError(ValueError):
    """Checkpoint tensors do not fit the model part they are loaded into."""


def load_checked(
    module: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    source: str,
    may_be_missing: tuple[str, ...] = (),
    assign: bool = False,
) -> None:
    """Copy ``tensors`` into ``module``'s parameters and buffers of the same names (``assign``:
    make them the module's tensors, e.g. for a module built on the meta device).

    Raises :class:`InitError` listing tensors the module lacks, tensors of the wrong shape and
    module tensors the source lacks (except names starting with ``may_be_missing``).
    """
    own = module.state_dict()
    unexpected = sorted(set(tensors) - set(own))
    mis_shaped = sorted(
        f"{k} {tuple(tensors[k].shape)} (expected {tuple(own[k].shape)})"
        for k in set(tensors) & set(own)
        if tensors[k].shape != own[k].shape
    )
    mis_typed = sorted(
        f"{k} {tensors[k].dtype} (expected {_kind(own[k])})"
        for k in set(tensors) & set(own)
        if _kind(tensors[k]) != _kind(own[k])
    )
    missing = sorted(k for k in set(own) - set(tensors) if not k.startswith(may_be_missing))
    problems = [
        f"{label}: {names[:10]}{' ...' if len(names) > 10 else ''} ({len(names)})"
        for label, names in (
            ("not in the model", unexpected),
            ("wrong shape", mis_shaped),
            ("wrong kind of number", mis_typed),
            ("missing from the source", missing),
        )
        if names
    ]
    if problems:
        raise InitError(f"cannot load {source}: " + "; ".join(problems))
    module.load_state_dict(dict(tensors), strict=False, assign=assign)


def _kind(tensor: torch.Tensor) -> str:
    """What a tensor may be converted from without losing meaning: an integer tensor never
    stands in for a floating-point parameter, nor the other way round."""
    if tensor.dtype == torch.bool:
        return "a bool tensor"
    if tensor.is_complex():
        return "a complex tensor"
    return "a floating-point tensor" if tensor.is_floating_point() else "an integer tensor"


class MappedTensors(dict[str, torch.Tensor]):
    """The tensors of safetensors files, each a view of its file mapped copy-on-write: nothing
    is copied and a page is read only when first used, so a model assigned these tensors holds
    one copy of its weights (the page cache's). Writing to a tensor copies only the page written.

    A caller that copies a tensor elsewhere (to another dtype, into a stack of experts) gives
    its pages back with :meth:`release`, so that source and copy never both stay resident."""

    def __init__(self) -> None:
        super().__init__()
        self._maps: list[tuple[int, int, mmap.mmap]] = []

    def add_file(self, file: Path) -> None:
        """Map ``file`` and add its tensors; a truncated or foreign file fails naming itself."""
        try:
            self.update(self._map(file))
        except (ValueError, KeyError, TypeError, OSError) as error:
            raise CheckpointFormatError(
                f"{file}: not a complete safetensors file ({error}; {file.stat().st_size} bytes); "
                "expected the whole file as written, was a download or copy cut short?"
            ) from None

    def _map(self, file: Path) -> dict[str, torch.Tensor]:
        with file.open("rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            size = os.fstat(handle.fileno()).st_size
            if not 0 < header_size <= size - 8:
                raise ValueError(f"header of {header_size} bytes")
            header = json.loads(handle.read(header_size))
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        self._maps.append((torch.frombuffer(mapped, dtype=torch.uint8).data_ptr(), size, mapped))
        start = 8 + header_size
        return {
            name: _tensor_view(mapped, start, entry)
            for name, entry in header.items()
            if name != "__metadata__"
        }

    def _mapping_of(self, tensor: torch.Tensor) -> tuple[int, mmap.mmap] | None:
        """``(start address, mapping)`` of the mapped file ``tensor`` lies in, if any."""
        begin = tensor.data_ptr()
        end = begin + tensor.numel() * tensor.element_size()
        for map_begin, size, mapped in self._maps:
            if map_begin <= begin and end <= map_begin + size:
                return map_begin, mapped
        return None

    def holds(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor``'s data lie in one of these mapped files."""
        return tensor.numel() > 0 and self._mapping_of(tensor) is not None

    def release(self, tensor: torch.Tensor) -> None:
        """Give back the pages that lie wholly inside ``tensor`` (one of these views, read
        and not written), once it has been copied; a no-op for any other tensor or where the
        system has no ``madvise``. A later read of the view reads the file again."""
        found = self._mapping_of(tensor) if tensor.numel() else None
        if found is None or not hasattr(found[1], "madvise"):
            return
        map_begin, mapped = found
        begin = tensor.data_ptr() - map_begin
        end = begin + tensor.numel() * tensor.element_size()
        first = -(-begin // mmap.PAGESIZE) * mmap.PAGESIZE
        last = end // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first:
            mapped.madvise(mmap.MADV_DONTNEED, first, last - first)


_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _tensor_view(mapped: mmap.mmap, start: int, entry: dict) -> torch.Tensor:
    """The tensor a safetensors header ``entry`` describes, as a view of the mapped file whose
    data begin at byte ``start``, on a storage of its own (as safetensors gives each tensor;
    copied when misaligned for its dtype)."""
    dtype = _DTYPES[entry["dtype"]]
    shape = [int(n) for n in entry["shape"]]
    begin, end = (start + int(offset) for offset in entry["data_offsets"])
    itemsize = torch.empty(0, dtype=dtype).element_size()
    if not start <= begin <= end <= len(mapped) or end - begin != math.prod(shape) * itemsize:
        raise ValueError(f"data offsets {entry['data_offsets']} do not hold shape {shape}")
    if begin == end:
        return torch.empty(shape, dtype=dtype)
    if begin % itemsize:
        data = torch.frombuffer(mapped, dtype=torch.uint8, count=end - begin, offset=begin)
        return data.clone().view(dtype).view(shape)
    count = (end - begin) // itemsize
    return torch.frombuffer(mapped, dtype=dtype, count=count, offset=begin).view(shape)


def read_safetensors_file(file: Path) -> MappedTensors:
    """Every tensor of one safetensors file, mapped (see :class:`MappedTensors`)."""
    tensors = MappedTensors()
    tensors.add_file(file)
    return tensors


def read_safetensors_folder(directory: Path | str) -> MappedTensors:
    """Every tensor of a folder, mapped: the shards its ``model.safetensors.index.json`` names,
    or else every ``*.safetensors`` file."""
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointFormatError(f"{index}: expected a 'weight_map' object")
        shards = sorted(set(weight_map.values()))
        missing = [name for name in shards if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names shards that are absent: {missing}")
        files = [directory / name for name in shards]
    else:
        files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no *.safetensors files")
    tensors = MappedTensors()
    for file in files:
        tensors.add_file(file)
    return tensors


class ModelFitter:
    """Stored tensors as a model built on the meta device holds them: in its dtype and memory
    layout, or quantized where it has an int8 weight (:class:`~zoo.layers.int8.Int8Weights`).

    A tensor that already fits is kept as it is (no copy); one that is converted is released
    (``release``) as soon as its copy exists, so that loading never holds both. Tensors the
    model lacks, or holds at another shape or kind of number, pass through unchanged for
    :func:`load_checked` to report. :meth:`stack_experts` builds each expert stack straight into
    its final form (int8 expert by expert), for the released layout's per-expert tensors.
    """

    def __init__(
        self, model: nn.Module, release: Callable[[torch.Tensor], None] = lambda tensor: None
    ) -> None:
        self.model = model
        self.release = release
        self.own = model.state_dict()

    def fit(self, named: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Every ``(name, tensor)`` of ``named``, fitted; consumed one at a time."""
        fitted: dict[str, torch.Tensor] = {}
        for name, tensor in named:
            target = self.own.get(name)
            if target is None or target.shape != tensor.shape:
                fitted[name] = tensor
            elif target.dtype == torch.int8 and tensor.is_floating_point():
                path, _, local = name.rpartition(".")
                entries = self.model.get_submodule(path).quantized_entries(local, tensor)
                fitted.update({f"{path}.{key}": value for key, value in entries.items()})
                self.release(tensor)
            elif _kind(tensor) != _kind(target):
                fitted[name] = tensor
            else:
                fitted[name] = _in_layout_of(tensor, target)
                if fitted[name] is not tensor:
                    self.release(tensor)
        return fitted

    def stack_experts(
        self, name: str, shape: tuple[int, int, int], pieces: list[ExpertRows]
    ) -> dict[str, torch.Tensor]:
        """A :data:`~zoo.io.convert.deepseek_decoder.StackExperts` for this model: a float
        stack (:func:`~zoo.io.convert.deepseek_decoder.stack_experts`, which :meth:`fit` then
        converts), or, where the model holds ``name`` in int8, the int8 stack and its scales,
        quantized one expert matrix at a time (no float stack is ever made)."""
        target = self.own.get(name)
        if target is None or target.dtype != torch.int8:
            return stack_experts(name, shape, pieces, self.release)
        scale_dtype = self.own[name + SCALE_SUFFIX].dtype
        stacked = torch.empty(shape, dtype=torch.int8)
        scales = torch.empty(shape[:2], dtype=scale_dtype)
        for expert, row, matrix in pieces:
            rows = slice(row, row + matrix.shape[0])
            stacked[expert, rows], scales[expert, rows] = quantize_per_channel(
                matrix, -1, scale_dtype
            )
            self.release(matrix)
        return {name: stacked.transpose(1, 2), name + SCALE_SUFFIX: scales}


def _in_layout_of(tensor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``tensor`` in ``target``'s dtype and strides (itself when it already is)."""
    same_layout = (
        tensor.is_contiguous() if target.is_contiguous() else (tensor.stride() == target.stride())
    )
    if tensor.dtype == target.dtype and same_layout:
        return tensor
    out = torch.empty_strided(target.shape, target.stride(), dtype=target.dtype)
    return out.copy_(tensor)

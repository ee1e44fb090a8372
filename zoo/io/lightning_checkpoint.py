"""Reading the Lightning ``.ckpt`` files of ``zoo.train`` safely: tensors and plain data only
(``torch.load(weights_only=True)``), and a file that is not such a checkpoint fails naming
itself and what was expected, never with advice to unpickle it."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from zoo.io.folder import CheckpointFormatError

EXPECTED = "expected a Lightning .ckpt written by zoo.train (a torch zip archive)"


def read_checkpoint_file(path: Path | str) -> dict[str, Any]:
    """The dict ``torch.save`` wrote to ``path``, its tensors memory-mapped (cheap to inspect).

    Raises :class:`CheckpointFormatError` for an empty, truncated or foreign file, and for one
    holding objects other than tensors and plain data (refused, never unpickled).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file; {EXPECTED}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointFormatError(
            f"{path}: empty file (0 bytes); {EXPECTED}. An interrupted copy or a full disk "
            "leaves such a file: use an earlier checkpoint"
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointFormatError(
            f"{path}: {size} bytes that are not a torch zip archive; {EXPECTED}. A truncated or "
            "overwritten file looks like this: use an earlier checkpoint"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        # torch's message suggests weights_only=False, which would run the file's code
        raise CheckpointFormatError(
            f"{path}: refused by the safe loader (torch.load with weights_only=True): it holds "
            "objects other than tensors and plain data, and checkpoints are never unpickled"
        ) from None
    except Exception as error:  # a damaged archive fails in many ways inside torch
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointFormatError(f"{path}: unreadable ({reason}); {EXPECTED}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointFormatError(f"{path}: holds a {type(checkpoint).__name__}; {EXPECTED}")
    return checkpoint


def read_ocr_checkpoint(path: Path | str) -> dict[str, Any]:
    """A checkpoint of zoo.train's ``OCRLightningModule``: one of another LightningModule (or a
    bare state dict) fails naming what it has instead."""
    checkpoint = read_checkpoint_file(path)
    hparams = checkpoint.get("hyper_parameters")
    if "state_dict" in checkpoint and isinstance(hparams, Mapping) and "model_cfg" in hparams:
        return checkpoint
    found = sorted(hparams) if isinstance(hparams, Mapping) else "none"
    raise CheckpointFormatError(
        f"{path}: not a checkpoint of zoo.train's OCRLightningModule (top-level keys "
        f"{sorted(checkpoint)[:12]}, hyper_parameters {found}); expected 'state_dict' and "
        "hyper_parameters.model_cfg. A checkpoint of another LightningModule cannot be loaded here"
    )

"""Lightning checkpoints written atomically beside their destination.

Lightning's own writer stages a checkpoint in the system temporary folder and copies it across
file systems, so a full disk leaves a truncated ``step_N.ckpt`` (or ``last.ckpt``) that a
resume then fails on. This one writes into the checkpoint folder and renames."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from zoo.io.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the checkpoint's folder, flushed to disk, then
    renamed onto the checkpoint; a failed write removes the temporary file and names the path.
    Remote paths (``s3://`` ...) go to Lightning's writer."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} takes no storage_options, got {storage_options}"
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary, temporary.open("wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())

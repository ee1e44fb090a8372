"""Atomic file writes: a file is written to a temporary name in its own folder and renamed onto
its destination, so a reader, a resumed run or a kill mid-write never finds it half written; a
failed write removes the temporary file and names the destination and the reason."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` to write; renamed onto ``path`` when the block
    ends without error. An ``OSError`` (full disk, permissions) is raised again naming ``path``.

    The temporary file is in the destination folder, so the rename never crosses file systems
    (a copy across them can be cut short, a rename cannot).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            reason = error.strerror or str(error)
            raise OSError(error.errno, f"could not write {path}: {reason}") from error
        raise


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`); returns it."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)

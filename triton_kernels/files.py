"""Atomic file writes, shared by the tuning cache, checkpoints and result files.

A file is written to a temporary sibling (``.<name>.<random>.tmp``) and renamed over the
target with ``os.replace``, which is atomic on POSIX and Windows: a reader sees the old file
or the new one, never a torn one. A process killed mid-write leaves only its temporary
file; :func:`remove_stale_temporaries` clears those (callers do it before they write again).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "remove_stale_temporaries", "temporary_pattern"]


def temporary_pattern(path: str | os.PathLike[str]) -> str:
    """Glob pattern (relative to the folder of ``path``) matching its temporary files."""
    return f".{Path(path).name}.*.tmp"


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)``, then rename the result over ``path``; returns ``path``.

    Parent folders are created. If ``write`` raises (or the process is interrupted with an
    exception), the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files that an interrupted :func:`atomic_write` of ``path`` left behind.

    Only call this where no other process is writing ``path`` at the same moment (a second
    writer's in-flight temporary would be removed and its rename would fail).
    """
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for stale in path.parent.glob(temporary_pattern(path)):
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed

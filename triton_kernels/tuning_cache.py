"""Persistent cache of autotuned kernel configs, so a tuned model starts fast.

``triton.autotune`` keeps its choices in memory only; every new process tunes again, which
for the XNOR GEMM means compiling and timing a dozen configs per shape. This module keeps
the winning config per (device name, triton version, kernel, shape key) in a JSON file::

    {"format": 1,
     "entries": {"NVIDIA H200|triton-3.6.0|xnor_popcount|M16-N8192-KW256-out0":
                     {"kwargs": {"BLOCK_M": 16, ...}, "num_warps": 4, "num_stages": 3}}}

The file lives at ``$TRITON_KERNELS_AUTOTUNE_CACHE`` if set (``off`` disables writing and
reading), else ``$XDG_CACHE_HOME/pyro_bdl/autotune.json`` (``~/.cache`` without XDG).
It is read on the first kernel launch of a process or by :func:`load_tuning_cache`, never
at import. Writes are atomic (temporary file + rename). A corrupt or foreign file is
ignored with a warning, never an error: the kernels then simply tune again.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import triton

FORMAT_VERSION = 1
CACHE_ENV = "TRITON_KERNELS_AUTOTUNE_CACHE"


def default_cache_path() -> Path | None:
    """Where tuned configs are stored; ``None`` when caching is switched off."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return None if configured.strip().lower() in {"", "off", "0", "none"} else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyro_bdl" / "autotune.json"


@dataclass(frozen=True)
class TunedConfig:
    """A kernel launch config: constexpr block sizes plus warps and pipeline stages."""

    kwargs: dict[str, int]
    num_warps: int
    num_stages: int

    @classmethod
    def from_triton(cls, config: triton.Config) -> TunedConfig:
        return cls(dict(config.kwargs), int(config.num_warps), int(config.num_stages))

    def to_json(self) -> dict[str, Any]:
        return {"kwargs": self.kwargs, "num_warps": self.num_warps, "num_stages": self.num_stages}

    @classmethod
    def from_json(cls, data: Any) -> TunedConfig:
        if not isinstance(data, dict) or not isinstance(data.get("kwargs"), dict):
            raise ValueError(f"not a tuned config: {data!r}")
        kwargs = {str(name): int(value) for name, value in data["kwargs"].items()}
        return cls(kwargs, int(data["num_warps"]), int(data["num_stages"]))


def entry_key(device: str, kernel: str, shape_key: str) -> str:
    """Key of one cache entry; tuned configs never cross devices or triton versions."""
    return f"{device}|triton-{triton.__version__}|{kernel}|{shape_key}"


@dataclass
class TuningCache:
    """In-memory view of one cache file; see the module docstring."""

    path: Path | None
    entries: dict[str, TunedConfig] = field(default_factory=dict)
    loaded: bool = False

    def load(self) -> int:
        """(Re)read the file, replacing what is in memory; returns the number of entries."""
        self.entries = self._read_file()
        self.loaded = True
        return len(self.entries)

    def _read_file(self) -> dict[str, TunedConfig]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
                raise ValueError(f"expected a JSON object with format {FORMAT_VERSION}")
            entries = data.get("entries")
            if not isinstance(entries, dict):
                raise ValueError("'entries' must be a JSON object")
            return {str(key): TunedConfig.from_json(value) for key, value in entries.items()}
        except (OSError, ValueError, KeyError, TypeError) as error:
            warnings.warn(
                f"ignoring unreadable autotune cache {self.path} ({error}); kernels will tune again",
                RuntimeWarning,
                stacklevel=3,
            )
            return {}

    def lookup(self, device: str, kernel: str, shape_key: str) -> TunedConfig | None:
        if not self.loaded:
            self.load()
        return self.entries.get(entry_key(device, kernel, shape_key))

    def record(self, device: str, kernel: str, shape_key: str, config: TunedConfig) -> None:
        """Remember a tuned config and write it to the file (merged with what is there)."""
        key = entry_key(device, kernel, shape_key)
        self.entries[key] = config
        if self.path is None:
            return
        merged = {**self._read_file(), **self.entries} if self.path.exists() else dict(self.entries)
        payload = {
            "format": FORMAT_VERSION,
            "entries": {name: value.to_json() for name, value in sorted(merged.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".autotune-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as stream:
                json.dump(payload, stream, indent=1)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


_default_cache: TuningCache | None = None


def default_tuning_cache() -> TuningCache:
    """The process-wide cache at :func:`default_cache_path` (created on first use)."""
    global _default_cache
    if _default_cache is None:
        _default_cache = TuningCache(default_cache_path())
    return _default_cache


def load_tuning_cache(path: str | os.PathLike[str] | None = None) -> int:
    """Load tuned configs now (otherwise they load on the first launch).

    Args:
        path: a cache file to use from now on; ``None`` keeps :func:`default_cache_path`.

    Returns:
        The number of tuned configs read.
    """
    global _default_cache
    _default_cache = TuningCache(Path(path)) if path is not None else TuningCache(default_cache_path())
    return _default_cache.load()

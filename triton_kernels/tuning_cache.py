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
at import. (Why not Triton's own ``cache_results``: see ``docs/kernels.md``.)

Promises:

* A corrupt or foreign file (not JSON, ``Infinity``/``NaN``, nesting too deep, a value that
  is not a plain integer, a wrong type anywhere) is ignored with a warning, never an error:
  the kernels then simply tune again, and the next record replaces the file.
* A file that cannot be written (read-only folder, full disk, lock timeout) never fails a
  kernel launch: the config is kept in memory and one warning per cache says so.
* Concurrent writers lose nothing: a record takes a file lock (``<file>.lock``, the
  ``filelock`` package that torch itself depends on), re-reads the file, merges its entries
  with the ones in memory and replaces the file atomically
  (:func:`triton_kernels.files.atomic_write`). Readers take no lock: they see the old file
  or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import triton
from filelock import FileLock, Timeout

from triton_kernels.files import atomic_write_text

FORMAT_VERSION = 1
CACHE_ENV = "TRITON_KERNELS_AUTOTUNE_CACHE"
LOCK_TIMEOUT_S = 30.0
"""How long a record waits for another writer's lock before keeping its config in memory only."""


def default_cache_path() -> Path | None:
    """Where tuned configs are stored; ``None`` when caching is switched off."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return None if configured.strip().lower() in {"", "off", "0", "none"} else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyro_bdl" / "autotune.json"


def _json_int(value: Any, what: str) -> int:
    """``value`` if it is a JSON integer (not a bool, not a float such as 1.7 or 2.0)."""
    if type(value) is not int:
        raise ValueError(f"{what} must be an integer, got {value!r:.40}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


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
        """Parse one entry; ``ValueError`` for anything but integer kwargs, warps and stages."""
        if not isinstance(data, dict) or not isinstance(data.get("kwargs"), dict):
            raise ValueError(f"not a tuned config: {data!r:.80}")
        kwargs = {str(name): _json_int(value, f"kwargs[{name!r}]") for name, value in data["kwargs"].items()}
        warps, stages = (_json_int(data.get(name), name) for name in ("num_warps", "num_stages"))
        return cls(kwargs, warps, stages)


def entry_key(device: str, kernel: str, shape_key: str) -> str:
    """Key of one cache entry; tuned configs never cross devices or triton versions."""
    return f"{device}|triton-{triton.__version__}|{kernel}|{shape_key}"


def parse_cache_text(text: str) -> dict[str, TunedConfig]:
    """The entries of a cache file's text; ``ValueError`` for anything that is not a valid cache."""
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as error:
        raise ValueError("JSON nested too deeply") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION or isinstance(data.get("format"), bool):
        raise ValueError(f"expected a JSON object with format {FORMAT_VERSION}")
    entries = data.get("entries")
    if not isinstance(entries, dict):
        raise ValueError("'entries' must be a JSON object")
    return {str(key): TunedConfig.from_json(value) for key, value in entries.items()}


@dataclass
class TuningCache:
    """In-memory view of one cache file; see the module docstring."""

    path: Path | None
    entries: dict[str, TunedConfig] = field(default_factory=dict)
    loaded: bool = False
    write_failed: bool = False

    def load(self) -> int:
        """(Re)read the file, replacing what is in memory; returns the number of entries."""
        self.entries = self._read_file()
        self.loaded = True
        return len(self.entries)

    def _read_file(self) -> dict[str, TunedConfig]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            return parse_cache_text(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
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
        """Remember a tuned config and merge it into the file; never raises for an unwritable file."""
        if not self.loaded:
            self.load()
        self.entries[entry_key(device, kernel, shape_key)] = config
        if self.path is None:
            return
        try:
            with FileLock(f"{self.path}.lock", timeout=LOCK_TIMEOUT_S):
                self.entries = {**self._read_file(), **self.entries}
                payload = {
                    "format": FORMAT_VERSION,
                    "entries": {name: value.to_json() for name, value in sorted(self.entries.items())},
                }
                atomic_write_text(self.path, json.dumps(payload, indent=1))
        except (OSError, Timeout) as error:
            if not self.write_failed:
                warnings.warn(
                    f"cannot write autotune cache {self.path} ({error}); tuned configs stay in memory "
                    f"for this process (set {CACHE_ENV} to a writable file, or to 'off')",
                    RuntimeWarning,
                    stacklevel=2,
                )
            self.write_failed = True


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

"""Launching ``@triton.autotune`` kernels through the persistent tuning cache.

A launch looks up (device, triton version, kernel, shape key) in the JSON cache of
:mod:`triton_kernels.tuning_cache`. On a hit the plain ``@triton.jit`` function runs with
the stored config, so nothing is compiled or timed beyond the one config. On a miss the
autotuner benchmarks its pruned configs and the winner is written to the cache.

Under ``TRITON_INTERPRET=1`` the autotuner is bypassed: the interpreter cannot time
configs, so the first config that survives pruning runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import triton

from triton_kernels._runtime import device_label, is_interpreting
from triton_kernels.tuning_cache import TunedConfig, default_tuning_cache

Grid = Callable[[dict[str, Any]], tuple[int, ...]]


def zero_output(nargs: dict[str, Any]) -> None:
    """Config pre-hook for split-K configs, whose programs accumulate with atomics."""
    nargs["c_ptr"].zero_()


def make_config(kwargs: dict[str, int], num_warps: int, num_stages: int) -> triton.Config:
    """A ``triton.Config``; split-K configs get the pre-hook that zeroes the output."""
    pre_hook = zero_output if kwargs.get("SPLIT_K", 1) > 1 else None
    return triton.Config(dict(kwargs), num_warps=num_warps, num_stages=num_stages, pre_hook=pre_hook)


def pruned_configs(kernel: triton.runtime.Autotuner, args: dict[str, Any]) -> list[triton.Config]:
    """The configs the kernel's ``early_config_prune`` keeps for these arguments."""
    prune = kernel.early_config_prune
    return list(prune(kernel.configs, {}, **args)) if prune else list(kernel.configs)


def launch_with_config(kernel: triton.runtime.Autotuner, grid: Grid, config: TunedConfig, args: dict[str, Any]) -> None:
    """Run the kernel's plain jit function with one explicit config (no autotuning)."""
    triton_config = make_config(config.kwargs, config.num_warps, config.num_stages)
    full_args = {**args, **config.kwargs}
    if triton_config.pre_hook is not None:
        triton_config.pre_hook(full_args)
    kernel.fn[grid](**full_args, num_warps=config.num_warps, num_stages=config.num_stages)


def launch_tuned(
    kernel: triton.runtime.Autotuner,
    name: str,
    grid: Grid,
    shape_key: str,
    device: torch.device,
    args: dict[str, Any],
    config: TunedConfig | None = None,
) -> TunedConfig:
    """Launch an autotuned kernel with all arguments passed by name.

    Args:
        kernel: the ``@triton.autotune`` wrapped kernel.
        name: kernel name used in the tuning cache.
        grid: launch grid as a function of the config's meta-parameters.
        shape_key: what the best config depends on (batch bucket, N, K words, output kind).
        device: where the tensors live (its name keys the cache).
        args: every kernel argument except the config's meta-parameters.
        config: force this config (tests use it to cover every config).

    Returns:
        The config that ran.
    """
    if config is None and is_interpreting():
        config = TunedConfig.from_triton(pruned_configs(kernel, args)[0])
    if config is None:
        cache = default_tuning_cache()
        label = device_label(device)
        config = cache.lookup(label, name, shape_key)
        if config is None:
            kernel[grid](**args)
            tuned = TunedConfig.from_triton(kernel.best_config)
            cache.record(label, name, shape_key, tuned)
            return tuned
    launch_with_config(kernel, grid, config, args)
    return config

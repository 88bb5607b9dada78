"""Random inputs for the kernel tests: fresh values from a fixed seed, made on the CPU."""

import torch

from triton_kernels import _autotune, pack_signs_reference


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_values(shape, gen: torch.Generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal values (integers in [-4, 4] for integer dtypes), with some zeros."""
    if dtype.is_floating_point:
        values = torch.randn(shape, generator=gen, dtype=torch.float64)
        values[torch.rand(shape, generator=gen) < 0.05] = 0.0
        return values.to(dtype=dtype, device=device)
    return torch.randint(-4, 5, shape, generator=gen, dtype=torch.int64).to(dtype=dtype, device=device)


def random_words(lead, k: int, gen: torch.Generator, device="cpu") -> torch.Tensor:
    """Sign words (*lead, ceil(k/32)) of k random signs, padding bits zero."""
    lead = (lead,) if isinstance(lead, int) else tuple(lead)
    signs = torch.randn((*lead, k), generator=gen)
    return pack_signs_reference(signs).to(device)


def random_channels(n: int, gen: torch.Generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Per-output values of either sign, away from zero."""
    values = (torch.rand(n, generator=gen) + 0.25) * torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    return values.to(dtype=dtype, device=device)


def record_launches(monkeypatch) -> list:
    """Record every config that ``launch_with_config`` runs (and still run it)."""
    launched = []
    original = _autotune.launch_with_config

    def spy(kernel, grid, config, args):
        launched.append(config)
        original(kernel, grid, config, args)

    monkeypatch.setattr(_autotune, "launch_with_config", spy)
    return launched


def count_binary_row_calls(monkeypatch) -> dict[str, int]:
    """Replace the binary-row kernels' compiled loops by counting wrappers; returns the live counts of
    ``rows_sum`` and ``outer_add`` calls."""
    from types import SimpleNamespace

    from triton_kernels import cpu_binary_rows

    jit, counts = cpu_binary_rows._jit(), {"rows_sum": 0, "outer_add": 0}

    def counted(name):
        def call(*args):
            counts[name] += 1
            return getattr(jit, name)(*args)

        return call

    spy = SimpleNamespace(count_columns=jit.count_columns, list_columns=jit.list_columns,
                          rows_sum=counted("rows_sum"), outer_add=counted("outer_add"))  # fmt: skip
    monkeypatch.setattr(cpu_binary_rows, "_jit", lambda: spy)
    return counts

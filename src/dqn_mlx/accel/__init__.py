"""Opt-in speed for a platform, never part of the algorithm: ``enable()`` switches it on.

On a Linux CPU (elsewhere the first three do nothing):
- ``blas``: MLX's matrix products on oneDNN's sgemm (x86-64) or OpenBLAS instead of the
  reference BLAS of the Linux wheel;
- ``jit``: a ``g++`` wrapper that lets MLX's JIT vectorise the element-wise kernels it fuses;
- ``allocator``: glibc thresholds that keep memory freed between updates mapped;
- ``gemm`` and ``numpy_actor``: the CPU formulation of ``QNetwork`` (convolutions as matrix
  products; acting in numpy where OpenBLAS computes the products), registered for the CPU
  device.
Each is proven equal to the plain definition by ``tests/test_accel.py``. Why and how:
docs/linux-cpu.md; the figures: docs/performance.md.

``enable()`` must run before the first ``import mlx.core`` (the BLAS must be in the process
before MLX binds its products); the command line and the tests' conftest call it first.
"""

from __future__ import annotations

from dataclasses import dataclass

from dqn_mlx.accel.blas import BlasStatus
from dqn_mlx.accel.jit import KernelStatus


@dataclass(frozen=True)
class AccelStatus:
    """What ``enable()`` switched on in this process, and why not where it did not."""

    blas: BlasStatus
    kernels: KernelStatus
    malloc_tuned: bool
    cpu_formulation: str


_status: AccelStatus | None = None


def enable() -> AccelStatus:
    """Switch every speed-up on for this process (idempotent); returns what was switched on."""
    global _status
    if _status is None:
        from dqn_mlx.accel.allocator import keep_freed_memory
        from dqn_mlx.accel.blas import load_fast_blas
        from dqn_mlx.accel.jit import use_vectorizing_compiler

        blas = load_fast_blas()  # first: before anything imports mlx.core
        kernels = use_vectorizing_compiler()
        malloc = keep_freed_memory()
        from dqn_mlx.accel.gemm import cpu_formulation
        from dqn_mlx.core.network import register_formulation

        # With oneDNN's sgemm, MLX's compiled greedy pass beats numpy's (docs/performance.md)
        numpy_acting = not blas.onednn
        formulation = cpu_formulation(numpy_acting)
        register_formulation("cpu", formulation)
        acting = "numpy acting" if numpy_acting else "MLX acting"
        _status = AccelStatus(blas, kernels, malloc, f"{formulation.name}, {acting}")
    return _status


def status() -> AccelStatus | None:
    """What ``enable()`` switched on, or None if it was not called."""
    return _status

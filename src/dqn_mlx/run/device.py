"""Where and how a mode computes: MLX's device, then the platform's layers (``dqn_mlx.accel``)
or, with ``--no-accel``, MLX's own. MLX and the platform's code load only when a mode asks, so
importing this (and ``--help``) loads neither."""

from __future__ import annotations

import dataclasses
import importlib.metadata
from typing import TYPE_CHECKING

from dqn_mlx.errors import UserError

if TYPE_CHECKING:
    from dqn_mlx.core.learner import Compute

EVAL_THREADS = 1
"""An evaluation's default layer threads: its batch-1 forward passes gain nothing from more,
and a training it watches keeps the other cores (docs/performance.md)."""


def check_threads(threads: int | None) -> None:
    if threads is not None and threads <= 0:
        raise UserError(f"--threads must be positive, got {threads}")


def select_device(
    device: str, accel: bool, threads: int | None, mode_default: int | None = None
) -> Compute:
    """Pick MLX's device, then how to compute on it: the platform's layers (``threads``, else
    ``OMP_NUM_THREADS``, else ``mode_default``, else every core of the process), or with
    ``--no-accel`` MLX's own."""
    check_threads(threads)
    try:
        import mlx.core as mx
    except ImportError as exc:  # e.g. the cuda group on a machine without an NVIDIA driver
        raise UserError(
            f"MLX could not load its backend ({exc}); the cuda group needs an NVIDIA GPU and "
            "driver: run without `--no-group cpu --group cuda` to use the CPU"
        ) from None
    if device == "gpu" and not mx.is_available(mx.gpu):
        raise UserError("--device gpu: MLX sees no GPU on this machine; use --device cpu")
    if device != "auto":
        mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)
    if not accel:
        from dqn_mlx.core.learner import PLAIN

        return dataclasses.replace(PLAIN, name=f"{PLAIN.name} (--no-accel)")
    from dqn_mlx.accel import platform_compute

    return platform_compute(threads, mode_default)


def backend_line(compute: Compute) -> str:
    """One line on the backend: MLX, the device, and the layers and optimizer it computes
    with (which path, and why where it is not the platform's own)."""
    import mlx.core as mx

    device = mx.default_device()
    try:
        info = mx.device_info()
        name = str(info.get("device_name") or info.get("architecture") or "")
    except (AttributeError, RuntimeError):
        name = ""
    head = f"MLX {importlib.metadata.version('mlx')} on {device}" + (f" ({name})" if name else "")
    return f"{head}; {compute.name}"

"""Speed for a platform, behind one seam: ``platform_compute`` picks how a learner computes.

On a Linux x86-64 CPU: the layers and optimizer steps of ``dqn-mlx-onednn``
(packages/dqn-mlx-onednn; oneDNN's convolutions and inner products, and one-pass Adam and
centered RMSProp, as MLX primitives compiled by ``uv sync``). Everywhere else (a Mac's GPU,
CUDA, another CPU), or with ``--no-accel``: MLX's own (``core.learner.PLAIN``), the
definitions. tests/test_onednn_layers.py and tests/test_accel.py prove the two equal,
gradients and optimizer steps included. The algorithm (``core/``) never imports this package,
and importing it changes nothing in the process.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys

from dqn_mlx.core.learner import PLAIN, Compute


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity, so ``taskset`` counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_count(threads: int | None, mode_default: int | None = None) -> int:
    """The CPU layers' thread count: ``threads`` (``--threads``), else ``OMP_NUM_THREADS``
    where set, else the mode's own default (``mode_default``: an evaluation's batch-1
    forward passes gain nothing from more than one), else the cores of this process's
    affinity (a training's updates use them all)."""
    if threads is not None and threads > 0:
        return threads
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]):
        return int(os.environ["OMP_NUM_THREADS"])
    return mode_default or default_threads()


SPIN_COUNT = "1000"
"""libgomp's busy-wait before an idle layer thread sleeps (``GOMP_SPINCOUNT``), where the user
set neither it nor ``OMP_WAIT_POLICY``. Its default, 300,000 spins, made two processes of two
threads on two cores run at a twelfth of their lone speed each; 1,000 shares the cores as well
as a passive wait and keeps a lone update as fast as the default (docs/performance.md)."""


def set_openmp_defaults() -> None:
    """Put ``SPIN_COUNT`` in the environment unless the user chose a wait policy or a spin
    count. libgomp reads them once, when it loads: ``platform_compute`` calls this before it
    loads the layers (a process that never asks for them keeps its environment)."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


def platform_compute(threads: int | None = None, mode_default: int | None = None) -> Compute:
    """The ``Compute`` for MLX's default device; its name says which path, and why where it
    is MLX's own.

    ``threads``, ``mode_default``: the CPU layers' OpenMP threads (``thread_count``)."""
    import mlx.core as mx

    if mx.default_device() != mx.cpu:
        return PLAIN
    if not (sys.platform == "linux" and platform.machine() == "x86_64"):
        return _plain("no oneDNN layers for this platform")
    set_openmp_defaults()
    try:
        from dqn_mlx.accel.onednn import ONEDNN, use_threads
    except ImportError as exc:
        if type(exc).__name__ == "MlxVersionMismatch":  # a stale build: say so, never fall back
            from dqn_mlx.errors import UserError

            raise UserError(str(exc)) from None
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _plain(f"the oneDNN layers did not load: {why}")
    count = use_threads(thread_count(threads, mode_default))
    threads_word = "thread" if count == 1 else "threads"
    return dataclasses.replace(ONEDNN, name=f"{ONEDNN.name}, {count} {threads_word}")


def _plain(why: str) -> Compute:
    return dataclasses.replace(PLAIN, name=f"{PLAIN.name} ({why})")

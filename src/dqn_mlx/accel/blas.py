"""Bring a fast BLAS into the process before MLX binds its matrix products (Linux CPU only).

The ``mlx-cpu`` wheel for Linux links netlib's reference BLAS, which multiplies matrices at
about 5 GFLOP/s: a DQN update then takes a second. ``libmlx`` resolves ``cblas_sgemm`` (and
``cblas_dgemm``, ``cblas_cgemm``) when it is loaded, and the dynamic linker takes the first
definition already present in the global symbol scope. So if a library exporting those plain
symbols is opened with ``RTLD_GLOBAL`` *before* the first ``import mlx.core``, MLX's products
run on it instead.

The library we bring is ``scipy-openblas32`` (a PyPI wheel, installed by ``uv sync`` on Linux).
Its symbols carry a ``scipy_`` prefix, so MLX would not see them. We compile, once per
machine, a tiny forwarding library that exports ``cblas_sgemm`` & co. and calls the prefixed
OpenBLAS functions; it is cached under ``~/.cache/dqn-mlx``. That needs ``gcc`` (MLX's own CPU
backend already calls a C++ compiler at run time). If anything is missing we go on with the
reference BLAS and say why, once.

On macOS MLX uses Accelerate and Metal, and nothing here runs.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_SHIM_SOURCE = r"""
/* Forwards the plain CBLAS GEMM symbols that libmlx imports to scipy-openblas32. */
extern void scipy_cblas_sgemm(int, int, int, int, int, int, float, const float*, int,
                              const float*, int, float, float*, int);
extern void scipy_cblas_dgemm(int, int, int, int, int, int, double, const double*, int,
                              const double*, int, double, double*, int);
extern void scipy_cblas_cgemm(int, int, int, int, int, int, const void*, const void*, int,
                              const void*, int, const void*, void*, int);
void cblas_sgemm(int o, int ta, int tb, int m, int n, int k, float alpha, const float* a,
                 int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  scipy_cblas_sgemm(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void cblas_dgemm(int o, int ta, int tb, int m, int n, int k, double alpha, const double* a,
                 int lda, const double* b, int ldb, double beta, double* c, int ldc) {
  scipy_cblas_dgemm(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void cblas_cgemm(int o, int ta, int tb, int m, int n, int k, const void* alpha, const void* a,
                 int lda, const void* b, int ldb, const void* beta, void* c, int ldc) {
  scipy_cblas_cgemm(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
"""


@dataclass(frozen=True)
class BlasStatus:
    """Which BLAS MLX's CPU matrix products use in this process, and why."""

    name: str
    detail: str
    fast: bool


_status: BlasStatus | None = None
_openblas: ctypes.CDLL | None = None  # the library MLX's products run on, once loaded


def cache_dir() -> Path:
    """Where dqn-mlx keeps the small build products it makes for this machine."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dqn-mlx"


def _build_shim(openblas: Path) -> Path:
    """Compile the forwarding library (once; keyed by the OpenBLAS path and the source)."""
    key = hashlib.sha256((str(openblas) + _SHIM_SOURCE).encode()).hexdigest()[:16]
    target = cache_dir() / f"libdqn_mlx_cblas_{key}.so"
    if target.exists():
        return target
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler (gcc) on PATH to build the CBLAS forwarding library")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        source = Path(tmp) / "shim.c"
        source.write_text(_SHIM_SOURCE)
        partial = Path(tmp) / target.name
        cmd = [
            compiler,
            "-O2",
            "-shared",
            "-fPIC",
            str(source),
            "-o",
            str(partial),
            f"-L{openblas.parent}",
            f"-l:{openblas.name}",
            f"-Wl,-rpath,{openblas.parent}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"gcc failed: {result.stderr.strip()[:200]}")
        os.replace(partial, target)  # atomic: a concurrent process sees all or nothing
    return target


def load_fast_blas() -> BlasStatus:
    """Open OpenBLAS with global symbols so that MLX binds to it; idempotent.

    Must run before the first ``import mlx.core`` in the process (``dqn_mlx`` does it on
    import). Set ``DQN_MLX_BLAS=reference`` to keep MLX's bundled reference BLAS.
    """
    global _status
    if _status is not None:
        return _status
    if sys.platform != "linux":
        _status = BlasStatus("platform default", "Accelerate/Metal on macOS", True)
    elif os.environ.get("DQN_MLX_BLAS", "") == "reference":
        _status = BlasStatus("reference", "DQN_MLX_BLAS=reference was set", False)
    elif "mlx.core" in sys.modules:
        _status = BlasStatus("reference", "mlx.core was imported before dqn_mlx", False)
    else:
        _status = _try_openblas()
    return _status


def _try_openblas() -> BlasStatus:
    try:
        with _brief_idle_spin():  # the import loads and initialises OpenBLAS
            import scipy_openblas32

        openblas = Path(scipy_openblas32.get_lib_dir()) / f"lib{scipy_openblas32.get_library()}.so"
        library = ctypes.CDLL(str(openblas), mode=os.RTLD_GLOBAL)
        shim = _build_shim(openblas)
        ctypes.CDLL(str(shim), mode=os.RTLD_GLOBAL)
    except Exception as exc:  # any failure: keep MLX's own BLAS, explain once
        return BlasStatus("reference", f"could not load OpenBLAS ({exc})", False)
    global _openblas
    _openblas = library
    return BlasStatus("OpenBLAS (scipy-openblas32)", str(openblas), True)


SPIN_TIMEOUT = "4"
"""``OPENBLAS_THREAD_TIMEOUT`` while our OpenBLAS loads: its idle worker threads spin for 2^4
cycles after a product instead of 2^28 (about 0.1 s, longer than the gap between two updates,
so the second core never rested), leaving that core to the emulators and the acting between
updates. A value the user set is kept. Measured in docs/performance.md."""


@contextmanager
def _brief_idle_spin() -> Iterator[None]:
    """Set ``SPIN_TIMEOUT`` for OpenBLAS's initialisation (it reads it once, when loaded), then
    put the environment back, so that child processes inherit the user's."""
    before = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", SPIN_TIMEOUT)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OPENBLAS_THREAD_TIMEOUT", None)


def set_threads(count: int) -> bool:
    """Let OpenBLAS use ``count`` threads for MLX's products from now on; False when MLX does
    not compute on our OpenBLAS (macOS, or it could not be loaded)."""
    if _openblas is None:
        return False
    _openblas.scipy_openblas_set_num_threads(count)
    return True


def threads() -> int | None:
    """OpenBLAS's thread count for MLX's products, or None where it does not apply."""
    return None if _openblas is None else int(_openblas.scipy_openblas_get_num_threads())


def measure_gflops(size: int = 512, repeats: int = 5) -> float:
    """Median GFLOP/s of an MLX float32 matrix product on the CPU (a probe of the BLAS in use)."""
    import time

    import mlx.core as mx

    a = mx.random.normal((size, size), stream=mx.cpu)
    b = mx.random.normal((size, size), stream=mx.cpu)
    mx.eval(a, b, mx.matmul(a, b, stream=mx.cpu))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(mx.matmul(a, b, stream=mx.cpu))
        times.append(time.perf_counter() - start)
    times.sort()
    return 2.0 * size**3 / times[len(times) // 2] / 1e9

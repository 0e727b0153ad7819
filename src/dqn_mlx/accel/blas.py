"""Bring a fast BLAS into the process before MLX binds its matrix products (Linux CPU only).

The ``mlx-cpu`` wheel for Linux links netlib's reference BLAS, which multiplies matrices at
about 5 GFLOP/s: a DQN update then takes a second. ``libmlx`` resolves ``cblas_sgemm`` (and
``cblas_dgemm``, ``cblas_cgemm``) when it is loaded, and the dynamic linker takes the first
definition already present in the global symbol scope. So if a library exporting those plain
symbols is opened with ``RTLD_GLOBAL`` *before* the first ``import mlx.core``, MLX's products
run on it instead.

What we bring, both PyPI wheels that ``uv sync`` installs on Linux:
- ``scipy-openblas32`` (OpenBLAS), for every product;
- on x86-64, ``onednn-cpu-gomp`` (Intel's oneDNN, OpenMP threads), whose JIT-generated
  ``dnnl_sgemm`` then takes the float32 products, the only ones a DQN update makes: the update
  takes about two thirds of its time on OpenBLAS (docs/performance.md).
Their symbols have other names (``scipy_cblas_sgemm``, ``dnnl_sgemm``), so MLX would not see
them. We compile, once per machine, a tiny forwarding library that exports ``cblas_sgemm`` & co.
and calls them; it is cached under ``~/.cache/dqn-mlx``. That needs ``gcc`` (MLX's own CPU
backend already calls a C++ compiler at run time). If anything is missing we go on with what
loaded (OpenBLAS alone, or the reference BLAS) and say why, once.
``DQN_MLX_BLAS=openblas`` skips oneDNN, ``DQN_MLX_BLAS=reference`` keeps MLX's own BLAS.

On macOS MLX uses Accelerate and Metal, and nothing here runs.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from dqn_mlx.errors import UserError

_OPENBLAS_GEMMS = r"""
extern void scipy_cblas_sgemm(int, int, int, int, int, int, float, const float*, int,
                              const float*, int, float, float*, int);
extern void scipy_cblas_dgemm(int, int, int, int, int, int, double, const double*, int,
                              const double*, int, double, double*, int);
extern void scipy_cblas_cgemm(int, int, int, int, int, int, const void*, const void*, int,
                              const void*, int, const void*, void*, int);
void cblas_dgemm(int o, int ta, int tb, int m, int n, int k, double alpha, const double* a,
                 int lda, const double* b, int ldb, double beta, double* c, int ldc) {
  scipy_cblas_dgemm(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void cblas_cgemm(int o, int ta, int tb, int m, int n, int k, const void* alpha, const void* a,
                 int lda, const void* b, int ldb, const void* beta, void* c, int ldc) {
  scipy_cblas_cgemm(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
"""
"""Both forwarding libraries: OpenBLAS's functions, and ``cblas_dgemm``/``cblas_cgemm`` on
them."""

_SHIM_SOURCE = (
    _OPENBLAS_GEMMS
    + r"""
/* Forwards cblas_sgemm, which libmlx imports, to scipy-openblas32 too. */
void cblas_sgemm(int o, int ta, int tb, int m, int n, int k, float alpha, const float* a,
                 int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  scipy_cblas_sgemm(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
"""
)

_ONEDNN_SHIM_SOURCE = (
    _OPENBLAS_GEMMS
    + r"""
/* Forwards cblas_sgemm, which libmlx imports, to oneDNN's sgemm; the others to OpenBLAS. */
#include <stdint.h>
#include <stdio.h>
extern int dnnl_sgemm(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t,
                      const float*, int64_t, float, float*, int64_t);
extern int omp_get_max_threads(void);
extern void omp_set_num_threads(int);
enum { ROW_MAJOR = 101, NO_TRANS = 111 };
static volatile int wanted_threads = 0;       /* 0: OpenMP's default (the usable cores) */
static volatile int last_product_threads = 0; /* what the latest product ran with */
static volatile int warned = 0;

/* OpenMP's thread count belongs to the calling thread (MLX's CPU stream), so it is set
   there, at the next product. */
void dqn_mlx_set_threads(int count) { wanted_threads = count; }
int dqn_mlx_get_threads(void) {
  return wanted_threads > 0 ? wanted_threads : omp_get_max_threads();
}
int dqn_mlx_last_product_threads(void) { return last_product_threads; }

void cblas_sgemm(int o, int ta, int tb, int m, int n, int k, float alpha, const float* a,
                 int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  int want = wanted_threads, status;
  char opa = ta == NO_TRANS ? 'N' : 'T', opb = tb == NO_TRANS ? 'N' : 'T';
  if (want > 0 && omp_get_max_threads() != want) omp_set_num_threads(want);
  last_product_threads = omp_get_max_threads();
  if (o == ROW_MAJOR)
    status = dnnl_sgemm(opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  else /* column-major C = op(A) op(B) is row-major C^T = op(B)^T op(A)^T */
    status = dnnl_sgemm(opb, opa, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
  if (status != 0) { /* oneDNN left C as it was: OpenBLAS computes it, and we say so once */
    if (!warned) fprintf(stderr, "dqn-mlx: dnnl_sgemm failed (status %d); OpenBLAS "
                                 "computes such products\n", status);
    warned = 1;
    scipy_cblas_sgemm(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}
"""
)


@dataclass(frozen=True)
class BlasStatus:
    """Which BLAS MLX's CPU matrix products use in this process, and why."""

    name: str
    detail: str
    fast: bool
    onednn: bool = False  # float32 products on oneDNN's sgemm


_status: BlasStatus | None = None
_openblas: ctypes.CDLL | None = None  # OpenBLAS, once loaded
_shim: ctypes.CDLL | None = None  # the forwarding library MLX's products go through


def cache_dir() -> Path:
    """Where dqn-mlx keeps the small build products it makes for this machine."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dqn-mlx"


def _build_shim(source_text: str, libraries: list[Path]) -> Path:
    """Compile a forwarding library against ``libraries`` (once; keyed by the compiler, its
    flags, the libraries' paths, the machine and the source)."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler (gcc) on PATH to build the CBLAS forwarding library")
    flags = ["-O2", "-shared", "-fPIC"]
    for library in libraries:
        flags += [f"-L{library.parent}", f"-l:{library.name}", f"-Wl,-rpath,{library.parent}"]
    identity = "\n".join([compiler, *flags, platform.machine(), source_text])
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    target = cache_dir() / f"libdqn_mlx_cblas_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        source = Path(tmp) / "shim.c"
        source.write_text(source_text)
        partial = Path(tmp) / target.name
        cmd = [compiler, str(source), "-o", str(partial), *flags]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"gcc failed: {result.stderr.strip()[:200]}")
        os.replace(partial, target)  # atomic: a concurrent process sees all or nothing
    return target


def load_fast_blas() -> BlasStatus:
    """Open the fast BLAS with global symbols so that MLX binds to it; idempotent.

    Must run before the first ``import mlx.core`` in the process (``accel.enable()`` runs it
    first). ``DQN_MLX_BLAS=openblas`` skips oneDNN; ``DQN_MLX_BLAS=reference`` keeps MLX's
    bundled reference BLAS.
    """
    global _status
    if _status is not None:
        return _status
    choice = os.environ.get("DQN_MLX_BLAS", "")
    if sys.platform != "linux":
        _status = BlasStatus("platform default", "Accelerate/Metal on macOS", True)
    elif choice not in BLAS_CHOICES:
        raise UserError(
            f"DQN_MLX_BLAS={choice} is not one of {', '.join(BLAS_CHOICES[1:])}; "
            "unset it for the fastest BLAS installed"
        )
    elif choice == "reference":
        _status = BlasStatus("reference", "DQN_MLX_BLAS=reference was set", False)
    elif "mlx.core" in sys.modules:
        _status = BlasStatus("reference", "mlx.core was imported before dqn_mlx", False)
    else:
        _status = _try_fast_blas(use_onednn=choice != "openblas")
    return _status


BLAS_CHOICES = ("", "openblas", "reference")  # DQN_MLX_BLAS: unset (the fastest), or one


def onednn_library() -> Path | None:
    """``libdnnl.so.3`` of the installed ``onednn-cpu-gomp`` wheel, or None."""
    try:
        files = importlib.metadata.files("onednn-cpu-gomp") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "libdnnl.so.3":
            path = Path(str(file.locate())).resolve()
            return path if path.exists() else None
    return None


def _try_fast_blas(use_onednn: bool) -> BlasStatus:
    global _openblas, _shim
    try:
        with _brief_idle_spin():  # the import loads and initialises OpenBLAS
            import scipy_openblas32

        openblas = Path(scipy_openblas32.get_lib_dir()) / f"lib{scipy_openblas32.get_library()}.so"
        library = ctypes.CDLL(str(openblas), mode=os.RTLD_GLOBAL)
    except Exception as exc:  # any failure: keep MLX's own BLAS, explain once
        return BlasStatus("reference", f"could not load OpenBLAS ({exc})", False)
    _openblas = library
    onednn = onednn_library() if use_onednn else None
    if onednn is not None:
        try:
            with _brief_openmp_spin():  # loading oneDNN loads and initialises libgomp
                ctypes.CDLL(str(onednn), mode=os.RTLD_GLOBAL)
            _shim = ctypes.CDLL(
                str(_build_shim(_ONEDNN_SHIM_SOURCE, [openblas, onednn])), mode=os.RTLD_GLOBAL
            )
            return BlasStatus("oneDNN (onednn-cpu-gomp) sgemm, OpenBLAS", str(onednn), True, True)
        except Exception as exc:
            fallback = f"oneDNN not used ({exc}); "
    elif use_onednn and platform.machine() == "x86_64":
        fallback = "oneDNN not used (no libdnnl.so.3 of onednn-cpu-gomp: run uv sync); "
    else:
        fallback = ""
    try:
        _shim = ctypes.CDLL(str(_build_shim(_SHIM_SOURCE, [openblas])), mode=os.RTLD_GLOBAL)
    except Exception as exc:
        return BlasStatus("reference", f"{fallback}could not load OpenBLAS ({exc})", False)
    return BlasStatus("OpenBLAS (scipy-openblas32)", fallback + str(openblas), True)


SPIN_TIMEOUT = "4"
"""``OPENBLAS_THREAD_TIMEOUT`` while our OpenBLAS loads: its idle worker threads spin for 2^4
cycles after a product instead of 2^28 (about 0.1 s, longer than the gap between two updates,
so the second core never rested), leaving that core to the emulators and the acting between
updates. A value the user set is kept. Measured in docs/performance.md."""

OPENMP_SPIN_COUNT = "1000"
"""``GOMP_SPINCOUNT`` while oneDNN's OpenMP runtime loads: its idle threads spin 1,000 times
after a product before they sleep, instead of 300,000, for the same reason as
``SPIN_TIMEOUT``. Kept as the user set it, and not set when ``OMP_WAIT_POLICY`` is; no effect
when libgomp was loaded before (another library's OpenMP). Measured in docs/performance.md.

libgomp's threads do not survive a ``fork`` without ``exec``: this project starts processes
only through ``subprocess`` (fork + exec) and Ray's fresh interpreters."""


@contextmanager
def _env_while_loading(name: str, value: str) -> Iterator[None]:
    """Set ``name`` (unless the user set it) while a library reads it once, when loaded, then
    put the environment back, so that child processes inherit the user's."""
    before = os.environ.get(name)
    os.environ.setdefault(name, value)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)


def _brief_idle_spin() -> AbstractContextManager[None]:
    return _env_while_loading("OPENBLAS_THREAD_TIMEOUT", SPIN_TIMEOUT)


def _brief_openmp_spin() -> AbstractContextManager[None]:
    if "OMP_WAIT_POLICY" in os.environ:  # the user chose how idle threads wait
        return nullcontext()
    return _env_while_loading("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)


def set_threads(count: int) -> bool:
    """Let MLX's products use ``count`` (at least 1) threads from now on; False when they do
    not run on a BLAS loaded here (macOS, or none could be loaded)."""
    if count < 1:
        raise ValueError(f"a BLAS thread count must be at least 1, not {count}")
    if _openblas is None or _shim is None:
        return False
    _openblas.scipy_openblas_set_num_threads(count)
    if hasattr(_shim, "dqn_mlx_set_threads"):
        _shim.dqn_mlx_set_threads(count)
    return True


def threads() -> int | None:
    """The thread count MLX's float32 products take from now on, or None where it does not
    apply."""
    if _shim is not None and hasattr(_shim, "dqn_mlx_get_threads"):
        return int(_shim.dqn_mlx_get_threads())
    return None if _openblas is None else int(_openblas.scipy_openblas_get_num_threads())


def last_product_threads() -> int | None:
    """The OpenMP threads oneDNN's latest float32 product ran with, on MLX's thread; None
    where oneDNN does not compute them."""
    if _shim is None or not hasattr(_shim, "dqn_mlx_last_product_threads"):
        return None
    return int(_shim.dqn_mlx_last_product_threads())


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

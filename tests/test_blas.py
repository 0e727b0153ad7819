"""The fast-BLAS loader: on Linux, MLX's matrix products must not run on the reference BLAS."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dqn_mlx import accel
from dqn_mlx.accel import blas
from dqn_mlx.accel.blas import measure_gflops

ON_X86_64_LINUX = sys.platform == "linux" and platform.machine() == "x86_64"
ROOT = Path(__file__).resolve().parent.parent
# oneDNN is expected wherever uv.lock installs it and the user did not choose another BLAS
EXPECT_ONEDNN = ON_X86_64_LINUX and os.environ.get("DQN_MLX_BLAS", "") == ""
needs_onednn = pytest.mark.skipif(
    not EXPECT_ONEDNN, reason="oneDNN is installed on x86-64 Linux only (and DQN_MLX_BLAS unset)"
)


def run_python(code: str, env: dict[str, str]) -> str:
    """What ``code`` prints in a fresh interpreter with ``env`` (the loader acts once per
    process, so each case needs its own)."""
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout


def child_env(**values: str) -> dict[str, str]:
    """This environment less the variables the loader reads, plus ``values``."""
    read = ("DQN_MLX_BLAS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")
    return {**{k: v for k, v in os.environ.items() if k not in read}, **values}


@pytest.mark.skipif(sys.platform != "linux", reason="the loader only acts on Linux")
def test_mlx_uses_the_fast_blas_in_this_process() -> None:
    status = accel.enable().blas  # the conftest enabled it first: this returns that status
    assert status.fast, status.detail
    # uv.lock installs oneDNN on x86-64 Linux: its sgemm must be the one in use there
    assert ("oneDNN" if EXPECT_ONEDNN else "OpenBLAS") in status.name, status.detail
    assert status.onednn == EXPECT_ONEDNN
    # The reference BLAS reaches about 5 GFLOP/s on our machines, OpenBLAS 150-240. The best
    # of three probes: one probe measured 13.5 once, in a CI run (a passing hiccup).
    assert max(measure_gflops(384) for _ in range(3)) > 25


@pytest.mark.skipif(sys.platform != "linux", reason="OpenBLAS is loaded on Linux only")
@pytest.mark.parametrize("given", [None, "7"])
def test_the_brief_idle_spin_leaves_the_environment_as_it_was(given: str | None) -> None:
    """OpenBLAS reads OPENBLAS_THREAD_TIMEOUT once, when ``import scipy_openblas32`` loads it;
    enable() sets it for that import only (children inherit the user's environment) and never
    replaces a value the user set."""
    env = child_env()
    if given is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = given
    code = (
        "import os, sys\nfrom dqn_mlx import accel\n"
        "seen = []\n"
        "class Spy:\n"
        "    def find_spec(self, name, *args):\n"
        "        if name == 'scipy_openblas32':\n"
        "            seen.append(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))\n"
        "sys.meta_path.insert(0, Spy())\naccel.enable()\n"
        "print(seen[0], os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    )
    while_loading, after = run_python(code, env).split()
    assert while_loading == (given or blas_spin_timeout())
    assert after == str(given)


def blas_spin_timeout() -> str:
    from dqn_mlx.accel.blas import SPIN_TIMEOUT

    return SPIN_TIMEOUT


@needs_onednn
@pytest.mark.parametrize("order", [101, 102], ids=["row-major", "column-major"])
@pytest.mark.parametrize("trans_a", [111, 112, 113], ids=["A", "A^T", "A^H"])
@pytest.mark.parametrize("trans_b", [111, 112], ids=["B", "B^T"])
def test_the_forwarded_sgemm_computes_what_cblas_defines(
    order: int, trans_a: int, trans_b: int
) -> None:
    """C <- alpha op(A) op(B) + beta C in both storage orders, with leading dimensions wider
    than the matrices: the column-major case reaches oneDNN (row-major only) transposed."""
    assert blas._shim is not None and hasattr(blas._shim, "dqn_mlx_set_threads")  # oneDNN's
    rng = np.random.default_rng(order + trans_a + trans_b)
    m, n, k, pad = 7, 5, 6, 3
    alpha, beta = 1.5, -0.5

    def stored(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, int]:
        """A logical (rows, cols) matrix in a buffer with a padded leading dimension."""
        logical = rng.standard_normal((rows, cols)).astype(np.float32)
        if order == 101:  # row-major: each row is contiguous
            buffer = np.zeros((rows, cols + pad), np.float32)
            buffer[:, :cols] = logical
        else:  # column-major: each column is contiguous
            buffer = np.zeros((cols, rows + pad), np.float32)
            buffer[:, :rows] = logical.T
        return logical, buffer, buffer.shape[1]

    a_shape = (k, m) if trans_a != 111 else (m, k)
    b_shape = (n, k) if trans_b == 112 else (k, n)
    a, a_buf, lda = stored(*a_shape)
    b, b_buf, ldb = stored(*b_shape)
    c, c_buf, ldc = stored(m, n)
    expected = alpha * (a.T if trans_a != 111 else a) @ (b.T if trans_b == 112 else b) + beta * c
    fptr = ctypes.POINTER(ctypes.c_float)
    blas._shim.cblas_sgemm.argtypes = [ctypes.c_int] * 6 + [
        ctypes.c_float,
        fptr,
        ctypes.c_int,
        fptr,
        ctypes.c_int,
        ctypes.c_float,
        fptr,
        ctypes.c_int,
    ]
    blas._shim.cblas_sgemm(
        order, trans_a, trans_b, m, n, k, alpha,
        a_buf.ctypes.data_as(fptr), lda, b_buf.ctypes.data_as(fptr), ldb,
        beta, c_buf.ctypes.data_as(fptr), ldc,
    )  # fmt: skip
    result = c_buf[:, :n] if order == 101 else c_buf[:, :m].T
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
    assert np.all(c_buf[:, -pad:] == 0), "wrote outside the matrix"


@needs_onednn
def test_set_threads_reaches_the_products_on_mlx_thread() -> None:
    """OpenMP's thread count is per thread: the forwarding library sets it on the thread that
    runs MLX's products, at the next product."""
    import mlx.core as mx

    before = blas.threads()
    assert before is not None
    a = mx.ones((64, 64), stream=mx.cpu)
    try:
        for count in (1, 2, 1):
            assert blas.set_threads(count)
            assert blas.threads() == count
            mx.eval(mx.matmul(a, a + count, stream=mx.cpu))
            assert blas.last_product_threads() == count
    finally:
        blas.set_threads(before)
    with pytest.raises(ValueError, match="at least 1"):
        blas.set_threads(0)


@needs_onednn
@pytest.mark.parametrize("given", [None, "300000", "wait-policy"])
def test_the_brief_openmp_spin_leaves_the_environment_as_it_was(given: str | None) -> None:
    """libgomp reads GOMP_SPINCOUNT once, when loading oneDNN loads it; enable() sets it for
    that load only, and never when the user set it or chose OMP_WAIT_POLICY."""
    env = child_env()
    if given == "wait-policy":
        env["OMP_WAIT_POLICY"] = "active"
    elif given is not None:
        env["GOMP_SPINCOUNT"] = given
    code = (
        "import ctypes, os\nseen = []\nopen_library = ctypes.CDLL.__init__\n"
        "def spy(self, name, *args, **kwargs):\n"
        "    if 'libdnnl' in str(name):\n"
        "        seen.append(os.environ.get('GOMP_SPINCOUNT'))\n"
        "    open_library(self, name, *args, **kwargs)\n"
        "ctypes.CDLL.__init__ = spy\n"
        "from dqn_mlx import accel\naccel.enable()\n"
        "print(seen[0], os.environ.get('GOMP_SPINCOUNT'))"
    )
    while_loading, after = run_python(code, env).split()
    if given == "wait-policy":
        assert while_loading == after == "None"
    else:
        assert while_loading == (given or blas.OPENMP_SPIN_COUNT)
        assert after == str(given)


@needs_onednn
def test_dqn_mlx_blas_openblas_skips_onednn() -> None:
    code = "from dqn_mlx import accel\ns = accel.enable()\nprint(s.blas.name, s.cpu_formulation)"
    out = run_python(code, child_env(DQN_MLX_BLAS="openblas"))
    assert out.startswith("OpenBLAS"), out
    assert out.strip().endswith("gemm, numpy acting"), out


@pytest.mark.skipif(sys.platform != "linux", reason="the loader only acts on Linux")
def test_an_unknown_dqn_mlx_blas_is_a_one_line_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--mode", "report", "--weights-dir", str(tmp_path)],
        env=child_env(DQN_MLX_BLAS="mkl"),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: DQN_MLX_BLAS=mkl is not one of openblas, reference; unset it for the fastest "
        "BLAS installed"
    ]


@needs_onednn
def test_with_onednn_the_cpu_network_acts_through_mlx() -> None:
    """oneDNN's sgemm makes MLX's compiled greedy pass faster than numpy's (the numpy actor
    stays for OpenBLAS, where it is the faster one)."""
    from dqn_mlx.core.network import _REGISTERED

    status = accel.enable()
    assert status.cpu_formulation == "gemm, MLX acting"
    formulation = _REGISTERED["cpu"]
    assert formulation.name == "gemm"
    assert formulation.greedy_policy is None

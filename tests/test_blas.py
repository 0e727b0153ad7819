"""The fast-BLAS loader: on Linux, MLX's matrix products must not run on the reference BLAS."""

from __future__ import annotations

import sys

import pytest

from dqn_mlx import accel
from dqn_mlx.accel.blas import measure_gflops


@pytest.mark.skipif(sys.platform != "linux", reason="the loader only acts on Linux")
def test_mlx_uses_openblas_in_this_process() -> None:
    status = accel.enable().blas  # the conftest enabled it first: this returns that status
    assert status.fast, status.detail
    assert "OpenBLAS" in status.name
    # The reference BLAS reaches about 5 GFLOP/s on our machines, OpenBLAS 150-240. The best
    # of three probes: one probe measured 13.5 once, in a CI run (a passing hiccup).
    assert max(measure_gflops(384) for _ in range(3)) > 25


@pytest.mark.skipif(sys.platform != "linux", reason="OpenBLAS is loaded on Linux only")
@pytest.mark.parametrize("given", [None, "7"])
def test_the_brief_idle_spin_leaves_the_environment_as_it_was(given: str | None) -> None:
    """OpenBLAS reads OPENBLAS_THREAD_TIMEOUT once, when ``import scipy_openblas32`` loads it;
    enable() sets it for that import only (children inherit the user's environment) and never
    replaces a value the user set."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
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
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    while_loading, after = result.stdout.split()
    assert while_loading == (given or blas_spin_timeout())
    assert after == str(given)


def blas_spin_timeout() -> str:
    from dqn_mlx.accel.blas import SPIN_TIMEOUT

    return SPIN_TIMEOUT

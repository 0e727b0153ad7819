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
    # The reference BLAS reaches about 5 GFLOP/s on our machines, OpenBLAS 150-190.
    assert measure_gflops(384) > 25

"""The fast-BLAS loader: on Linux, MLX's matrix products must not run on the reference BLAS."""

from __future__ import annotations

import sys

import pytest

import dqn_mlx
from dqn_mlx.blas import measure_gflops


@pytest.mark.skipif(sys.platform != "linux", reason="the loader only acts on Linux")
def test_mlx_uses_openblas_in_this_process() -> None:
    assert dqn_mlx.BLAS_STATUS.fast, dqn_mlx.BLAS_STATUS.detail
    assert "OpenBLAS" in dqn_mlx.BLAS_STATUS.name
    # The reference BLAS reaches about 5 GFLOP/s on our machines, OpenBLAS 150-190.
    assert measure_gflops(384) > 25

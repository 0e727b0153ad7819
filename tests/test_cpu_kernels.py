"""accel/jit.py: MLX's fused CPU kernels, vectorised by our g++ wrapper, with bit-identical
results."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dqn_mlx import accel
from dqn_mlx.accel.jit import compiler_flags, flags_accepted_by

# Centered RMSProp on 100,003 parameters (an odd size: the vector loop's scalar tail runs too),
# compiled into one fused kernel whose sqrt and 8 pointers kept plain g++ from vectorising.
_RMSPROP_SCRIPT = """
import sys
import numpy as np
from dqn_mlx import accel
vectorized = accel.enable().kernels.vectorized
from dqn_mlx.accel.jit import compiler_flags, flags_accepted_by
import mlx.core as mx
from dqn_mlx.core.learner import CenteredRMSProp

rng = np.random.default_rng(7)
grad, param, g, g2 = (mx.array(rng.standard_normal(100_003).astype(np.float32)) for _ in range(4))
g2 = g * g + g2 * g2  # g2 >= g^2, as the running averages keep it: no sqrt of a negative
opt = CenteredRMSProp(2.5e-4, 0.95, 0.95, 0.01)
step = mx.compile(lambda grad, param, g, g2: opt.apply_single(grad, param, {"g": g, "g2": g2}))
new = step(grad, param, g, g2)
np.save(sys.argv[1], np.array(new))
print(vectorized)
"""


def _run(tmp: Path, plain: bool) -> tuple[np.ndarray, str, bool]:
    """The fused step in a fresh process with its own MLX kernel cache: values, the compiled
    kernels' disassembly, and whether the wrapper was in use."""
    env = dict(os.environ, TMPDIR=str(tmp))
    if plain:
        env["DQN_MLX_JIT"] = "plain"
    out = tmp / "new.npy"
    result = subprocess.run(
        [sys.executable, "-c", _RMSPROP_SCRIPT, str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    kernels = sorted(tmp.glob("mlx/*/cpu/*.so"))
    assert kernels, "MLX compiled no kernel"
    objdump = shutil.which("objdump")
    assert objdump is not None, "objdump (binutils, which g++ needs) is missing"
    code = "".join(
        subprocess.run([objdump, "-d", str(k)], capture_output=True, text=True, check=True).stdout
        for k in kernels
    )
    return np.load(out), code, result.stdout.strip() == "True"


@pytest.mark.skipif(sys.platform != "linux", reason="the wrapper only acts on Linux")
def test_mlx_compiles_fused_kernels_through_the_wrapper() -> None:
    kernels = accel.enable().kernels  # as the conftest enabled it
    assert kernels.vectorized, kernels.detail
    compiler = shutil.which("g++")
    assert compiler is not None and Path(compiler).parent.name.startswith("jit-")


@pytest.mark.skipif(sys.platform != "linux", reason="the wrapper only acts on Linux")
def test_vectorised_rmsprop_kernel_gives_bit_identical_results(tmp_path: Path) -> None:
    (tmp_path / "fast").mkdir()
    (tmp_path / "plain").mkdir()
    fast, fast_code, fast_wrapped = _run(tmp_path / "fast", plain=False)
    plain, plain_code, plain_wrapped = _run(tmp_path / "plain", plain=True)
    assert fast_wrapped and not plain_wrapped
    # packed square roots (sqrtps / vsqrtps) only where the wrapper compiled the kernel
    assert "sqrtps" in fast_code
    assert "sqrtps" not in plain_code
    assert fast.tobytes() == plain.tobytes()
    assert np.isfinite(fast).all()


def test_a_compiler_that_rejects_a_flag_gets_no_wrapper() -> None:
    compiler = shutil.which("g++")
    assert compiler is not None
    assert flags_accepted_by(compiler, compiler_flags())
    assert not flags_accepted_by(compiler, (*compiler_flags(), "--no-such-flag"))

"""Let MLX's CPU JIT vectorise the element-wise kernels it fuses (Linux CPU only).

``mx.compile`` fuses each chain of element-wise operations into one C++ loop, which MLX 0.32
compiles at run time by calling ``g++ -std=c++17 -O3`` from the ``PATH``, with no other flag.
Two defaults keep g++ from vectorising those loops:
- ``sqrt`` must set ``errno`` for a negative argument, so each element takes a branch;
- a loop is vectorised only after run-time checks that its pointers do not overlap, and g++
  gives up past 10 pointer pairs. Centered RMSProp reads 5 arrays and writes 3 (24 pairs).
So the optimizer, 1.7M parameters per Nature update, ran one float at a time, about 3x
slower than vectorised (``update_optimizer_ms_nature2015``; docs/linux-cpu.md).

We put a wrapper named ``g++`` first on the ``PATH`` of this process. It calls the real g++
with ``-fno-math-errno`` (MLX never reads errno), a higher alias-check limit,
``-ffp-contract=off`` and, where the CPU has it, ``-mavx2``. Without contraction into fused
multiply-adds every kernel computes the same float32 operations in the same order, and IEEE
``+ - * / sqrt`` are exactly rounded at any vector width: the results are bit-identical to the
plain build's (tested). The wrapper is cached under ``~/.cache/dqn-mlx``, written only after
the real compiler built a small loop with these flags (clang installed as g++ may reject one).

MLX caches compiled kernels by name in ``$TMPDIR/mlx/<version>/cpu``; kernels that a plain
MLX process compiled there earlier are reused as they are (same results, slower). Set
``DQN_MLX_JIT=plain`` to leave the compiler alone. On macOS nothing here runs.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dqn_mlx.accel.blas import cache_dir

# -ffp-contract=off keeps a*b+c two roundings (no FMA), so results match the plain build.
BASE_FLAGS = (
    "-fno-math-errno",
    "-ffp-contract=off",
    "--param=vect-max-version-for-alias-checks=100",
)


@dataclass(frozen=True)
class KernelStatus:
    """How MLX's CPU JIT compiles fused kernels in this process, and why."""

    vectorized: bool
    detail: str


_status: KernelStatus | None = None


def cpu_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as info:
            return any(line.startswith("flags") and " avx2" in line for line in info)
    except OSError:
        return False


def compiler_flags() -> tuple[str, ...]:
    return BASE_FLAGS + (("-mavx2",) if cpu_has_avx2() else ())


def _write_wrapper(real: str, flags: tuple[str, ...]) -> Path:
    """A ``g++`` script that runs ``real`` with ``flags`` first; written once, atomically."""
    script = (
        "#!/bin/sh\n"
        "# dqn-mlx (accel/jit.py): MLX's JIT compiler, with flags that let it vectorise\n"
        f'exec {shlex.quote(real)} {" ".join(flags)} "$@"\n'
    )
    key = hashlib.sha256(script.encode()).hexdigest()[:16]
    target = cache_dir() / f"jit-{key}" / "g++"
    if not target.exists():
        if not flags_accepted_by(real, flags):
            raise OSError(f"{real} rejects one of {' '.join(flags)}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"g++.{os.getpid()}.tmp")
        partial.write_text(script)
        partial.chmod(0o755)
        os.replace(partial, target)  # atomic: a concurrent process sees all or nothing
    return target


def flags_accepted_by(real: str, flags: tuple[str, ...]) -> bool:
    """Whether ``real`` compiles a small loop with ``flags``: a compiler that rejects one of
    them (say, clang installed as g++) must not get the wrapper, or every MLX kernel would
    fail to build."""
    source = (
        "#include <cmath>\n"
        "void f(float* a, int n) { for (int i = 0; i < n; ++i) a[i] = std::sqrt(a[i]); }\n"
    )
    result = subprocess.run(
        [real, *flags, "-O3", "-x", "c++", "-c", "-", "-o", os.devnull],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0


def _path_without_wrappers() -> str:
    """``PATH`` less any wrapper directory that a parent dqn-mlx process put there (a
    subprocess inherits it): a wrapper must call the real compiler, and ``plain`` mean plain."""
    ours = cache_dir()
    entries = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(e for e in entries if Path(e).parent != ours)


def use_vectorizing_compiler() -> KernelStatus:
    """Put the ``g++`` wrapper first on this process's ``PATH``; idempotent.

    Must run before MLX compiles its first kernel (``dqn_mlx`` does it on import)."""
    global _status
    if _status is not None:
        return _status
    if sys.platform != "linux":
        _status = KernelStatus(False, "not Linux: MLX's CPU JIT flags left alone")
        return _status
    path = _path_without_wrappers()
    real = shutil.which("g++", path=path)
    if os.environ.get("DQN_MLX_JIT", "") == "plain":
        _status = KernelStatus(False, "DQN_MLX_JIT=plain was set")
    elif real is None:
        _status = KernelStatus(False, "no g++ on PATH (MLX compiles no fused kernels either)")
    else:
        try:
            flags = compiler_flags()
            path = f"{_write_wrapper(real, flags).parent}{os.pathsep}{path}"
            _status = KernelStatus(True, " ".join(flags))
        except OSError as exc:
            _status = KernelStatus(False, f"no g++ wrapper ({exc})")
    os.environ["PATH"] = path
    return _status

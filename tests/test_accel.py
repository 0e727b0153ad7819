"""dqn_mlx.accel: the algorithm never imports it, importing the package changes nothing, and
every acceleration computes exactly the plain definition (gradients included)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from dqn_mlx.accel import gemm
from dqn_mlx.accel.jit import _path_without_wrappers
from dqn_mlx.core.network import DEFINITION, QNetwork, default_formulation

PACKAGE = Path(__file__).parents[1] / "src" / "dqn_mlx"


def _imports(path: Path, text: str | None = None) -> set[str]:
    """Every module a package file imports (``text``: its source, if not read from ``path``),
    relative imports resolved to absolute names."""
    package = ["dqn_mlx", *path.relative_to(PACKAGE).parent.parts]
    names: set[str] = set()
    for node in ast.walk(ast.parse(text if text is not None else path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_the_import_check_resolves_relative_imports() -> None:
    text = "from ..accel import gemm\nfrom . import replay\nimport dqn_mlx.accel.jit\n"
    names = _imports(PACKAGE / "core" / "loop.py", text)
    assert {"dqn_mlx.accel.gemm", "dqn_mlx.core.replay", "dqn_mlx.accel.jit"} <= names


def test_the_algorithm_never_imports_the_acceleration() -> None:
    """Nothing outside accel/ imports it, except the command line and the benchmark, which
    switch it on."""
    allowed = {PACKAGE / "cli.py", PACKAGE / "bench.py"}
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "accel" not in path.relative_to(PACKAGE).parts
        and path not in allowed
        and any(name.startswith("dqn_mlx.accel") for name in _imports(path))
    ]
    assert offenders == []


# Imports every module of the package except accel/, the command line and the benchmark, builds
# a network and runs an update, and reports what changed in the process.
_IMPORT_EVERYTHING = """
import importlib, os, pkgutil, sys
path_before = os.environ["PATH"]
import dqn_mlx
for package in ("", "core.", "run.", "report."):
    folder = os.path.join(dqn_mlx.__path__[0], package.rstrip("."))
    for module in pkgutil.iter_modules([folder], f"dqn_mlx.{package}"):
        if module.name not in ("dqn_mlx.accel", "dqn_mlx.cli", "dqn_mlx.bench"):
            importlib.import_module(module.name)
import numpy as np
from dqn_mlx.config import NIPS2013
from dqn_mlx.core.learner import Learner
learner = Learner(NIPS2013, 4)
frames = np.zeros((32, 4, 84, 84), np.uint8)
learner.update(frames, np.zeros(32, int), np.zeros(32, np.float32), frames, np.zeros(32))
maps = open("/proc/self/maps").read() if sys.platform.startswith("linux") else ""
print(os.environ["PATH"] == path_before, "dqn_mlx_cblas" in maps,
      learner.online.formulation.name, any(m.startswith("dqn_mlx.accel") for m in sys.modules))
"""


def test_importing_the_package_changes_nothing_in_the_process() -> None:
    """No PATH edit (the g++ wrapper), no compiled BLAS shim loaded, the plain definition in
    use, and accel never imported. (That no ``mallopt`` runs either is checked by
    tests/test_allocator.py: without ``enable()``, freed memory faults as with glibc's
    defaults.)"""
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERYTHING],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PATH=_path_without_wrappers()),  # as a fresh shell has it
    )
    assert out.stdout.split() == ["True", "False", "definition", "False"]


def test_enable_makes_the_cpu_formulation_the_default_on_the_cpu() -> None:
    # the conftest called accel.enable(), as the command line does
    if mx.default_device() == mx.cpu:
        assert default_formulation().name == "gemm"
        assert QNetwork(4).formulation.name == "gemm"


def _pair(architecture: str) -> tuple[QNetwork, QNetwork]:
    mx.random.seed(0)
    plain = QNetwork(6, architecture, formulation=DEFINITION)
    fast = QNetwork(6, architecture, formulation=gemm.cpu_formulation())
    fast.update(plain.parameters())
    return plain, fast


def _frames(n: int = 5) -> mx.array:
    return mx.array(np.random.default_rng(0).integers(0, 256, (n, 4, 84, 84), dtype=np.uint8))


@pytest.mark.parametrize("architecture", ["nips2013", "nature2015"])
def test_gemm_formulation_equals_the_definition_gradients_included(architecture: str) -> None:
    plain, fast = _pair(architecture)
    frames = _frames()
    expected = np.array(plain(frames))
    assert np.ptp(expected) > 1e-3  # not a comparison of near-constant outputs
    assert np.allclose(expected, np.array(fast(frames)), atol=1e-5)  # the pass that learns
    assert np.allclose(expected, np.array(fast.predict(frames)), atol=1e-5)  # no gradient

    def loss(model: QNetwork, x: mx.array) -> mx.array:
        return (model(x) ** 2).sum()

    grads_plain = dict(tree_flatten(nn.value_and_grad(plain, loss)(plain, frames)[1]))
    grads_fast = dict(tree_flatten(nn.value_and_grad(fast, loss)(fast, frames)[1]))
    assert grads_plain.keys() == grads_fast.keys()
    for name in grads_plain:
        a, b = np.array(grads_plain[name]), np.array(grads_fast[name])
        assert np.allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(a).max()), name


def test_gemm_features_read_unsigned_bytes_in_both_passes() -> None:
    plain, fast = _pair("nips2013")
    pixels = mx.array(np.random.default_rng(1).integers(128, 256, (3, 4, 84, 84), np.uint8))
    expected = np.array(plain(pixels))
    for for_gradient in (True, False):
        features = gemm.gemm_features(fast, pixels, for_gradient)
        x = nn.relu(fast.hidden(features.reshape(3, -1)))
        assert np.allclose(np.array(fast.head(x)), expected, atol=1e-5)

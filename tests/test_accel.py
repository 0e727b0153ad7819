"""dqn_mlx.accel: the algorithm never imports it, importing the package changes nothing, and the
platform's ``Compute`` (network and optimizer) computes what MLX's own does: a network's
values and gradients, and whole updates of both optimizers."""

from __future__ import annotations

import ast
import os
import platform
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from dqn_mlx.accel import platform_compute
from dqn_mlx.bench import random_batch
from dqn_mlx.config import LAPTOP, NATURE2015, NIPS2013
from dqn_mlx.core.learner import PLAIN, Learner
from dqn_mlx.core.network import QNetwork

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
    text = "from ..accel import onednn\nfrom . import replay\nimport dqn_mlx.accel.x\n"
    names = _imports(PACKAGE / "core" / "loop.py", text)
    assert {"dqn_mlx.accel.onednn", "dqn_mlx.core.replay", "dqn_mlx.accel.x"} <= names


def test_the_algorithm_never_imports_the_acceleration() -> None:
    """Nothing outside accel/ imports it, except the choice of device (``run/device.py``,
    which the command line asks), which makes the ``Compute`` the rest is handed."""
    allowed = {PACKAGE / "run" / "device.py"}
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "accel" not in path.relative_to(PACKAGE).parts
        and path not in allowed
        and any(name.startswith("dqn_mlx.accel") for name in _imports(path))
    ]
    assert offenders == []


# Imports every module of the package, builds a network and runs an update on the CPU, and
# reports what changed in the process.
_IMPORT_EVERYTHING = """
import importlib, os, pkgutil, sys
environ_before = dict(os.environ)
import dqn_mlx
for package in ("", "core.", "run.", "report.", "accel."):
    folder = os.path.join(dqn_mlx.__path__[0], package.rstrip("."))
    for module in pkgutil.iter_modules([folder], f"dqn_mlx.{package}"):
        importlib.import_module(module.name)
import numpy as np
from dqn_mlx.config import NIPS2013
from dqn_mlx.core.learner import Learner
learner = Learner(NIPS2013, 4)
frames = np.zeros((32, 4, 84, 84), np.uint8)
learner.update(frames, np.zeros(32, int), np.zeros(32, np.float32), frames, np.zeros(32))
print(dict(os.environ) == environ_before, learner.compute.name == "MLX's own layers and optimizer")
"""


def test_importing_the_package_changes_nothing_in_the_process() -> None:
    """Every module imported, accel/ included: no environment variable changed, and a learner
    built without a ``Compute`` computes with MLX's own layers and optimizer."""
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERYTHING], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "True"]


ON_X86_LINUX = sys.platform == "linux" and platform.machine() == "x86_64"


def test_the_cpu_of_x86_64_linux_computes_with_onednn_and_elsewhere_with_mlx() -> None:
    compute = platform_compute(threads=1)
    if ON_X86_LINUX and mx.default_device() == mx.cpu:
        assert compute.name.startswith("oneDNN") and compute.name.endswith(", 1 thread")
        assert compute.layers is not PLAIN.layers
    else:
        assert compute.layers is PLAIN.layers


def _frames(n: int = 5) -> mx.array:
    return mx.array(np.random.default_rng(0).integers(0, 256, (n, 4, 84, 84), dtype=np.uint8))


@pytest.mark.parametrize("architecture", ["nips2013", "nature2015"])
def test_the_platform_network_equals_the_definition_gradients_included(architecture: str) -> None:
    compute = platform_compute()
    mx.random.seed(0)
    plain = QNetwork(6, architecture)
    fast = QNetwork(6, architecture, layers=compute.layers)
    fast.update(plain.parameters())
    frames = _frames()
    expected = np.array(plain(frames))
    assert np.ptp(expected) > 1e-3  # not a comparison of near-constant outputs
    assert np.allclose(expected, np.array(fast(frames)), atol=1e-5)

    def loss(model: QNetwork, x: mx.array) -> mx.array:
        return (model(x) ** 2).sum()

    grads_plain = dict(tree_flatten(nn.value_and_grad(plain, loss)(plain, frames)[1]))
    grads_fast = dict(tree_flatten(nn.value_and_grad(fast, loss)(fast, frames)[1]))
    assert grads_plain.keys() == grads_fast.keys()
    for name in grads_plain:
        a, b = np.array(grads_plain[name]), np.array(grads_fast[name])
        assert np.allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(a).max()), name


@pytest.mark.parametrize("config", [LAPTOP, NATURE2015, NIPS2013], ids=lambda c: c.preset)
def test_compiled_updates_with_the_platform_compute_follow_the_plain_ones(config) -> None:
    """Ten whole updates (TD target, loss, gradient, Adam or centered RMSProp, target sync)
    from the same weights on the same ten minibatches: the losses stay equal up to float
    rounding, and so do the weights on average. (A few weights may differ by up to a step or
    two: where a gradient is near zero, rounding flips its sign, and Adam's early steps are
    about the learning rate whatever the gradient's size. The optimizer steps alone are
    compared tightly in tests/test_onednn_layers.py.) Each update gets a fresh minibatch, as
    in training: one minibatch repeated ten times drives nips2013's loss (no target network)
    up many-fold, which amplifies such a flip into losses that differ in their fourth digit
    on a CPU whose kernels round otherwise (AVX-512). The optimizer state starts as MLX's
    broadcast zeros, as in a real run."""
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, 4) for _ in range(10)]
    learners = []
    for compute in (PLAIN, platform_compute()):
        mx.random.seed(0)
        learners.append(Learner(config, 4, compute))
    plain, fast = learners
    for batch in batches:
        a, b = plain.update(*batch), fast.update(*batch)
        assert abs(a.loss - b.loss) <= 1e-4 * max(1.0, abs(a.loss)), (a.loss, b.loss)
    weights_plain = dict(tree_flatten(plain.online.parameters()))
    weights_fast = dict(tree_flatten(fast.online.parameters()))
    differ = mx.concatenate(
        [mx.abs(weights_plain[k] - w).flatten() for k, w in weights_fast.items()]
    )
    assert float(differ.mean()) < 1e-6, float(differ.mean())
    assert float(differ.max()) <= 2 * 10 * config.learning_rate, float(differ.max())
    mx.random.seed(0)
    start = dict(tree_flatten(Learner(config, 4).online.parameters()))  # the same initial weights
    moved = max(float(mx.abs(start[k] - w).max()) for k, w in weights_fast.items())
    assert moved > 3 * config.learning_rate, moved  # the updates did change the weights


_THREADS_OF = """
import os, sys
from dqn_mlx.accel import platform_compute
compute = platform_compute(None, int(sys.argv[1]) if len(sys.argv) > 1 else None)
print(compute.name.rsplit(", ", 1)[-1], os.environ.get("GOMP_SPINCOUNT"), sep="|")
"""


def _threads_of(env: dict[str, str], *mode_default: str) -> list[str]:
    """What ``platform_compute`` chooses in a fresh process with ``env``: its thread count and
    libgomp's spin count then in the process's environment."""
    openmp = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    clean = {k: v for k, v in os.environ.items() if k not in openmp}
    out = subprocess.run([sys.executable, "-c", _THREADS_OF, *mode_default], env={**clean, **env},
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip().split("|")


@pytest.mark.skipif(not ON_X86_LINUX, reason="the oneDNN layers' threads are Linux x86-64's")
def test_each_mode_uses_the_threads_the_docs_give_and_openmp_spins_briefly() -> None:
    """Training (no mode default): every core of the process's affinity; evaluation: 1; either
    way OMP_NUM_THREADS or --threads wins. The layers' idle OpenMP threads spin 1,000 times
    before they sleep (GOMP_SPINCOUNT, set before libgomp loads) unless the user chose a wait
    policy or a spin count. The README's --threads row says the same."""
    from dqn_mlx.accel import SPIN_COUNT
    from dqn_mlx.run.device import EVAL_THREADS

    cores = len(os.sched_getaffinity(0))
    word = "thread" if cores == 1 else "threads"
    assert SPIN_COUNT == "1000"
    assert _threads_of({}) == [f"{cores} {word}", "1000"]
    assert EVAL_THREADS == 1 and _threads_of({}, str(EVAL_THREADS)) == ["1 thread", "1000"]
    assert _threads_of({"OMP_NUM_THREADS": "3"}, "1") == ["3 threads", "1000"]
    assert _threads_of({"OMP_WAIT_POLICY": "ACTIVE"}) == [f"{cores} {word}", "None"]
    assert _threads_of({"GOMP_SPINCOUNT": "5"}) == [f"{cores} {word}", "5"]
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    threads_row = next(line for line in readme.splitlines() if line.startswith("| | `--threads"))
    assert "train: every core" in threads_row and "eval: 1" in threads_row, threads_row
    assert "GOMP_SPINCOUNT=1000" in threads_row, threads_row

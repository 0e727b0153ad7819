"""Checkpoints: one self-describing safetensors file per epoch, written atomically.

``<weights dir>/<env-id>/<run-name>/epoch_<N>.safetensors`` holds the online network's weights
(MLX layout, whatever layers computed them) and string metadata: the env id, the preset
and the full config (JSON), the number and meaning of the actions, the epoch, agent steps,
emulator frames, updates, and the versions of dqn-mlx and MLX. Evaluation needs nothing else.

Every file is written under a temporary name in the same folder and renamed over the target,
so a crash leaves either the previous complete file or the new complete file, never half.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from dqn_mlx.config import DQNConfig, with_overrides
from dqn_mlx.core.network import ARCHITECTURES, PLAIN, Layers, QNetwork, parameter_shapes
from dqn_mlx.errors import UserError
from dqn_mlx.files import atomic_write
from dqn_mlx.run.formats import config_fields

FORMAT_VERSION = "1"


def mlx_version() -> str:
    return importlib.metadata.version("mlx")


def default_run_name(config: DQNConfig, now: datetime.datetime | None = None) -> str:
    """Short, readable and unique: the preset, the seed and the start time to the second,
    e.g. ``laptop-seed0-20261126-171500``."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{config.preset}-seed{config.seed}-{stamp}"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the network, its config and what it was trained on."""

    network: QNetwork
    config: DQNConfig
    env_id: str
    action_meanings: list[str]
    metadata: dict[str, str]


def save_weights(
    path: Path,
    network: QNetwork,
    config: DQNConfig,
    env_id: str,
    action_meanings: list[str],
    progress: dict[str, int],
) -> None:
    """Write the online weights and metadata to ``path`` atomically."""
    from dqn_mlx import __version__

    metadata = {
        "format": f"dqn-mlx/{FORMAT_VERSION}",
        "env_id": env_id,
        "preset": config.preset,
        "architecture": config.network,
        "config": json.dumps(dataclasses.asdict(config)),
        "num_actions": str(len(action_meanings)),
        "action_meanings": json.dumps(action_meanings),
        "dqn_mlx_version": __version__,
        "mlx_version": mlx_version(),
        **{key: str(value) for key, value in progress.items()},
    }
    arrays = dict(tree_flatten(network.parameters()))

    def write(tmp: Path) -> None:
        mx.save_safetensors(str(tmp), arrays, metadata=metadata)

    atomic_write(path, write)


def config_from_json(text: str) -> DQNConfig:
    """The config saved in a checkpoint, of any version (``run/formats.py``); fields unknown
    to this version are ignored."""
    fields = config_fields(json.loads(text))
    known = {f.name for f in dataclasses.fields(DQNConfig)}
    overrides = tuple(tuple(x) for x in fields.pop("frame_skip_overrides", ()))
    config = with_overrides(DQNConfig(), {k: v for k, v in fields.items() if k in known})
    return dataclasses.replace(config, frame_skip_overrides=overrides)


def read_safetensors(path: Path) -> tuple[dict[str, mx.array], dict[str, str]]:
    """A safetensors file's arrays and string metadata."""
    loaded: Any = mx.load(str(path), format="safetensors", return_metadata=True)
    return loaded[0], loaded[1]


def check_finite(
    arrays: dict[str, mx.array], what: str, advice: str = "take an earlier checkpoint of the run"
) -> None:
    """A UserError naming the first array that holds a NaN or an infinity, with ``advice``:
    such weights would only stop a run at its first update, or play nonsense."""
    for name, value in arrays.items():
        if mx.issubdtype(value.dtype, mx.floating) and not mx.all(mx.isfinite(value)).item():
            raise UserError(
                f"{what}: {name} holds NaN or infinite numbers, so the file cannot be used; "
                f"{advice}"
            )


def load_checkpoint(path: Path, layers: Layers = PLAIN) -> Checkpoint:
    """Load and check a checkpoint into a network of ``layers``; every problem is a one-line
    UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(
            f"--load-path {path} does not exist; point it at an "
            "epoch_<N>.safetensors file written by --mode train"
        )
    if path.is_dir():
        raise UserError(f"--load-path {path} is a directory; give an epoch_<N>.safetensors file")
    try:
        arrays, metadata = read_safetensors(path)
    except Exception as exc:
        raise UserError(
            f"--load-path {path} is not a readable safetensors file "
            f"(truncated or another format?): {str(exc).splitlines()[0][:120]}"
        ) from None
    if str(metadata.get("format", "")).startswith("dqn-mlx-train-state/"):
        raise UserError(
            f"--load-path {path} is a training state (what --resume continues), not a "
            f"checkpoint: evaluate one of the run's epoch_<N>.safetensors files, or continue "
            f"the run with --mode train --resume {shlex.quote(str(path.parent))}"
        )
    missing = [k for k in ("format", "env_id", "config", "action_meanings") if k not in metadata]
    if missing or not str(metadata.get("format", "")).startswith("dqn-mlx/"):
        raise UserError(
            f"--load-path {path} has no dqn-mlx metadata (missing "
            f"{', '.join(missing) or 'format'}); was it written by dqn-mlx?"
        )
    config = config_from_json(metadata["config"])
    action_meanings = json.loads(metadata["action_meanings"])
    if config.network not in ARCHITECTURES:
        raise UserError(f"--load-path {path}: unknown architecture {config.network!r}")
    network = QNetwork(len(action_meanings), config.network, config.history_length, layers)
    expected = parameter_shapes(network)
    found = {name: tuple(value.shape) for name, value in arrays.items()}
    if found != expected:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:2]
        raise UserError(
            f"--load-path {path}: weights do not match a {config.network} network "
            f"with {len(action_meanings)} actions (differs at {diff})"
        )
    check_finite(arrays, f"--load-path {path}")
    network.update(tree_unflatten(list(arrays.items())))
    mx.eval(network.parameters())
    return Checkpoint(network, config, metadata["env_id"], action_meanings, dict(metadata))

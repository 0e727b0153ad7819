"""Older save formats, read as today's: the one place that knows the history of our files.

A run started with an earlier version resumes with this one, and its checkpoints, metrics and
replay memory still load. Each function upgrades one format version to the next; the version
is named by what the next one added:

- run state (``RunState`` as JSON in ``train_state.safetensors``):
  v1 the game's fields flat in the run's, and an unused ``epoch_start_step`` (before
  ``GameRecord``); v2 one ``game`` (before ``--num-envs``); v3 ``games``, one per game (today);
- config (JSON in every checkpoint and state): v1 ``target_update_period`` in updates (before
  the sync was counted in agent steps); v2 ``target_update_agent_steps`` (today);
- replay memory: v1 ``replay.npz``, unnamed by the state, one stream (``cursor``) and no agent
  step; v2 the agent step; v3 ``replay-<agent step>.npz`` named by the state, a stream per game
  (``sizes``, ``cursors``: today);
- ``metrics.jsonl`` records: v1 without ``date``; v2 with it (today);
- temporary files: v1 ``.<name>.<8 characters>.<suffix>``; v2 ``files.TEMPORARY_PREFIX``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from dqn_mlx.core.game import GameRecord
from dqn_mlx.core.loop import RunState

# --- run state ------------------------------------------------------------------------------


def run_state_from_json(fields: dict[str, Any]) -> RunState:
    """A saved ``RunState`` of any version."""
    if "games" not in fields:
        fields = run_state_v2(fields if "game" in fields else run_state_v1(fields))
    return RunState.from_json(fields)


def run_state_v1(fields: dict[str, Any]) -> dict[str, Any]:
    """The game's fields, flat in v1, as v2's one ``game``."""
    game_fields = set(GameRecord.__dataclass_fields__)
    game = {key: value for key, value in fields.items() if key in game_fields}
    rest = {key: value for key, value in fields.items() if key not in game_fields}
    return {**rest, "game": game}


def run_state_v2(fields: dict[str, Any]) -> dict[str, Any]:
    """v2's one ``game`` as v3's list of games; ``epoch_start_step`` (v1) is dropped."""
    rest = {k: v for k, v in fields.items() if k not in ("game", "epoch_start_step")}
    return {**rest, "games": [fields.get("game") or {}]}


# --- config ---------------------------------------------------------------------------------


def config_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A saved config's fields of any version, as today's names."""
    return config_v1(fields) if "target_update_period" in fields else fields


def config_v1(fields: dict[str, Any]) -> dict[str, Any]:
    """v1's target period in updates, as agent steps (updates x update period)."""
    rest = {key: value for key, value in fields.items() if key != "target_update_period"}
    steps = int(fields["target_update_period"]) * int(fields.get("update_period", 1))
    return {**rest, "target_update_agent_steps": steps}


# --- replay memory --------------------------------------------------------------------------

LEGACY_REPLAY_FILE = "replay.npz"
"""The replay memory of a v1 state, which names none."""


def replay_file_of_state(metadata: dict[str, str]) -> str | None:
    """The replay memory a training state's metadata names (v1: ``replay.npz``); None when
    it was saved without one."""
    return metadata.get("replay", LEGACY_REPLAY_FILE) or None


def replay_layout(data: Any, agent_step: int) -> tuple[int, np.ndarray, np.ndarray]:
    """The agent step a saved replay memory belongs to, and its streams' sizes and cursors.
    A file without its agent step (v1) is taken as the state's."""
    saved_at = int(data["agent_step"]) if "agent_step" in data.files else agent_step
    if "sizes" in data.files:
        return saved_at, data["sizes"], data["cursors"]
    return saved_at, *replay_v2(data)


def replay_v2(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """v2's (and v1's) one stream as one stream's size and cursor."""
    return np.array([len(data["actions"])]), np.array([data["cursor"]])


# --- metrics and temporary files ------------------------------------------------------------


def metrics_record(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch's record of any version: v1 lacks ``date`` (the report shows "—")."""
    return record if "date" in record else {**record, "date": None}


_TEMPORARY_V1 = re.compile(r"^\.(train_state|replay|epoch_\d+|metrics|games|updates)\.\w{8}\.\w+$")


def is_temporary_v1(name: str) -> bool:
    """Whether ``name`` is a temporary file of v1's ``files.atomic_write``."""
    return _TEMPORARY_V1.match(name) is not None

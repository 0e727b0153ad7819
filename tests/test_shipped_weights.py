"""The trained checkpoints in ``weights/`` load with today's code and play real games better than
chance, so that a format change can never strand them (and the README's eval command works on a
fresh clone)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from compute import COMPUTE

from dqn_mlx.core.env import make_atari_env
from dqn_mlx.core.policy import epsilon_greedy, greedy_policy
from dqn_mlx.evaluate import PROTOCOLS, play_episodes
from dqn_mlx.report.plots import LEARNING_CURVES
from dqn_mlx.report.table import RESULTS_FILE, collect_results, results_text, run_records
from dqn_mlx.run.checkpoint import load_checkpoint

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
RUN = "laptop-seed0-1500k"  # README "Results"; the final checkpoint of each
FINAL = "epoch_15.safetensors"
# One game, cut off where the 2015 protocol cuts it (18,000 emulator frames, 5 minutes): a fixed
# number of agent steps across restarts would not do, since a random policy restarting at the
# first sector of Beam Rider scores points as fast as the trained agent does early in its one
# long game.
PROTOCOL = PROTOCOLS["nature2015"]
SEEDS = (1000, 1001, 1002)  # the calibration's; the test plays the first
# Points (raw score) of one game by which the shipped checkpoint (epsilon 0.05) must beat a
# uniformly random policy on the same seeded game. Each margin is at most half the smallest gap
# measured over SEEDS (`uv run python tests/test_shipped_weights.py` prints them), trained vs
# random:
# - Beam Rider: 852-1092 vs 132-352;
# - Breakout: 41-227 vs 1;
# - Enduro: 266-315 vs 0;
# - Pong: -5 to 12 vs -20 to -21;
# - Q*bert: 475-1300 vs 50-150;
# - Seaquest: 780-1240 vs 60-280;
# - Space Invaders: 605-1155 vs 90-210.
MARGIN = {
    "BeamRiderNoFrameskip-v4": 250,
    "BreakoutNoFrameskip-v4": 20,
    "EnduroNoFrameskip-v4": 133,
    "PongNoFrameskip-v4": 8,
    "QbertNoFrameskip-v4": 200,
    "SeaquestNoFrameskip-v4": 250,
    "SpaceInvadersNoFrameskip-v4": 195,
}
SHIPPED = [WEIGHTS / game / RUN / FINAL for game in MARGIN]


def test_the_shipped_runs_are_complete() -> None:
    """What README "Results" and its quick start point to."""
    for checkpoint in SHIPPED:
        folder = checkpoint.parent
        for name in (
            checkpoint.name,
            "metrics.jsonl",
            "games.csv",
            "updates.csv",
            "rewards_plot.png",
            "q_values_plot.png",
            "RESULTS.md",
        ):
            assert (folder / name).is_file(), folder / name
        # the final checkpoint's 30-game evaluation, under the name eval gives it (which
        # adds the game, games and seed) or the short one of the first two games shipped
        evaluation = f"{checkpoint.stem}.eval_nature2015*.json"
        assert list(folder.glob(evaluation)), folder / evaluation
        assert list(folder.glob("events.out.tfevents.*")), folder  # TensorBoard's


def test_each_shipped_results_table_is_what_the_report_writes_from_the_shipped_files(
    tmp_path: Path,
) -> None:
    """``weights/RESULTS.md`` and each shipped run's own are what ``--mode report`` writes
    today from the files git ships, and from nothing else: not from a file that is in the
    folder but ignored (an evaluation's results), nor from a report of older code."""
    listing = subprocess.run(["git", "ls-files", "-z", "weights"], cwd=WEIGHTS.parent,
                             capture_output=True, check=True)  # fmt: skip
    for name in filter(None, listing.stdout.decode().split("\0")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).symlink_to(WEIGHTS.parent / name)
    tables = sorted((tmp_path / "weights").rglob(RESULTS_FILE))
    assert len(tables) == 1 + len(list((tmp_path / "weights").glob("*/laptop-seed*-1500k")))
    for table in tables:
        runs = run_records(table.parent)
        expected = results_text(collect_results(table.parent, runs), runs)
        assert table.read_text() == expected, f"{table.relative_to(tmp_path)} is stale"
        if f"]({LEARNING_CURVES})" in expected:  # the figure it shows is shipped too
            assert (table.parent / LEARNING_CURVES).is_file(), table.relative_to(tmp_path)


def game_score(path: Path, epsilon: float, seed: int) -> float:
    """Raw score of one game of epsilon-greedy play by the checkpoint, seeded with ``seed``,
    ended by its game over or by ``PROTOCOL``'s frame limit."""
    ckpt = load_checkpoint(path, COMPUTE.layers)
    cfg = ckpt.config
    env = make_atari_env(
        ckpt.env_id,
        cfg.frame_skip,
        cfg.noop_max,
        PROTOCOL.max_episode_frames,
        seed,
        cfg.fire_after_life_loss,
    )
    assert env.action_meanings == ckpt.action_meanings
    rng = np.random.default_rng(seed)
    act = epsilon_greedy(greedy_policy(ckpt.network), epsilon, env.num_actions, rng)
    try:
        result = play_episodes(env, act, cfg.history_length, 1, seed)
    finally:
        env.close()
    assert len(result.scores) == 1
    assert result.agent_steps * cfg.frame_skip <= PROTOCOL.max_episode_frames
    return result.scores[0]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parts[-3])
def test_a_shipped_checkpoint_plays_better_than_chance(path: Path) -> None:
    """Against a uniformly random policy on the same seeded game, by the game's calibrated
    margin (``MARGIN``)."""
    trained = game_score(path, 0.05, seed=SEEDS[0])
    chance = game_score(path, 1.0, seed=SEEDS[0])
    margin = MARGIN[path.parts[-3]]
    assert trained >= chance + margin, f"{path}: trained {trained} vs random {chance}"


def calibrate(paths: list[Path]) -> None:
    """Print each checkpoint's game score and the random policy's, per seed of ``SEEDS``."""
    for path in paths:
        for seed in SEEDS:
            trained, chance = game_score(path, 0.05, seed), game_score(path, 1.0, seed)
            print(f"{path}  seed {seed}: trained {trained:g}, random {chance:g}", flush=True)


if __name__ == "__main__":  # calibration: the shipped checkpoints, or the paths given
    import sys

    calibrate([Path(arg) for arg in sys.argv[1:]] or SHIPPED)

"""Eval videos: the game's real screens written and read back as MP4, sharp enough to read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dqn_mlx.core.env import make_atari_env
from dqn_mlx.report.video import write_video


def read_video(path: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Every frame of an MP4 as (height, width, 3) RGB, and ffmpeg's metadata."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]
    return frames, meta


def _breakout_screens(count: int) -> list[np.ndarray]:
    env = make_atari_env("BreakoutNoFrameskip-v4", 4, 30, 108_000, seed=1, colour_frames=True)
    env.reset(seed=1)
    rng, screens = np.random.default_rng(1), []
    for _ in range(count):
        env.step(int(rng.integers(env.num_actions)))
        assert env.colour_frame is not None
        screens.append(env.colour_frame.copy())
    env.close()
    return screens


def test_a_colour_video_keeps_the_screens_pixels_and_the_score_digits(tmp_path: Path) -> None:
    screens = _breakout_screens(45)
    path = write_video(screens, tmp_path / "game.mp4")
    assert path.suffix == ".mp4"
    frames, meta = read_video(path)
    assert meta["size"] == (480, 630) and len(frames) == len(screens)
    for screen, frame in zip(screens, frames, strict=True):
        original = np.repeat(np.repeat(screen, 3, axis=0), 3, axis=1).astype(int)
        error = np.abs(frame.astype(int) - original)
        assert error.mean() < 1.5, error.mean()  # imageio-ffmpeg at quality 1: 2.5
        # the score digits (the top rows): every pixel close to the screen's
        digits = error[: 20 * 3]
        assert np.percentile(digits, 99) < 20, np.percentile(digits, 99)  # quality 1: 62


def test_a_grayscale_video_is_the_agents_view_enlarged(tmp_path: Path) -> None:
    frames_in = [np.full((84, 84), 16 * k, np.uint8) for k in range(12)]
    frames, meta = read_video(write_video(frames_in, tmp_path / "agent.mp4"))
    assert meta["size"] == (252, 252)
    assert [f.mean() for f in frames] == pytest.approx([16 * k for k in range(12)], abs=3)

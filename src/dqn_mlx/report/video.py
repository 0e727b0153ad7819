"""Gameplay videos for ``--mode eval --video DIR``: one file per game, named with game, epoch
and score. By default they show the game's own screen (210x160 RGB, from a twin emulator that
plays the same game, ``core/env.py``); ``--video-view agent`` shows what the agent sees
instead (its 84x84 grayscale frames). Both are enlarged by a whole factor, so that no pixel is
blurred, and encoded at a quality where the score digits stay sharp.

MP4 (H.264) through ``imageio-ffmpeg``, whose wheel carries its own ffmpeg binary (no system
ffmpeg); if that fails, an animated GIF through Pillow (which matplotlib already brings).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from dqn_mlx.core.env import Step

SCALE = 3  # the screen at 480 wide by 630 high, the agent's view at 252x252
FPS = 15  # one frame per agent step: 60 emulator frames per second / frame skip 4
CRF = 18  # x264's constant quality: visually lossless for the flat colours of Atari screens


def write_video(frames: list[np.ndarray], path: Path, scale: int = SCALE) -> Path:
    """Write (H, W) grayscale or (H, W, 3) RGB uint8 frames, enlarged ``scale`` times, as
    ``path`` (.mp4), or as .gif if the encoder fails. ffmpeg enlarges the frames itself, each
    pixel to a ``scale`` x ``scale`` block (nearest neighbour), so only the game's own pixels
    travel through the pipe."""
    try:
        import imageio_ffmpeg

        height, width = frames[0].shape[:2]
        writer = imageio_ffmpeg.write_frames(
            str(path),
            (width, height),
            pix_fmt_in="rgb24" if frames[0].ndim == 3 else "gray",
            fps=FPS,
            quality=None,
            macro_block_size=2,
            output_params=[
                *("-vf", f"scale=iw*{scale}:ih*{scale}:flags=neighbor"),
                *("-crf", str(CRF), "-loglevel", "error"),
            ],
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame).tobytes())
        writer.close()
        return path
    except Exception:
        from PIL import Image

        gif = path.with_suffix(".gif")
        big = [np.repeat(np.repeat(f, scale, axis=0), scale, axis=1) for f in frames]
        images = [Image.fromarray(f) for f in big]
        images[0].save(gif, save_all=True, append_images=images[1:], duration=1000 // FPS)
        return gif


class EpisodeVideos:
    """An evaluation observer: collects each game's frames and writes its video at the end.
    ``frame_of`` picks what is filmed at each agent step (the screen, or the agent's frame)."""

    def __init__(
        self, folder: Path, name: str, frame_of: Callable[[Step], np.ndarray], scale: int = SCALE
    ):
        self.folder, self.name, self.frame_of, self.scale = Path(folder), name, frame_of, scale
        self.folder.mkdir(parents=True, exist_ok=True)
        self.frames: list[np.ndarray] = []
        self.score = 0.0
        self.written: list[Path] = []

    def __call__(self, episode: int, step: Step) -> None:
        self.score += step.reward
        if step.game_over or step.truncated:  # the frame already shows the next game
            path = self.folder / f"{self.name}_game{episode + 1}_score{self.score:g}.mp4"
            if self.frames:
                self.written.append(write_video(self.frames, path, self.scale))
            self.frames, self.score = [], 0.0
        else:
            self.frames.append(self.frame_of(step).copy())

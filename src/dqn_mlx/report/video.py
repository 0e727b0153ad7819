"""Gameplay videos for ``--mode eval --video DIR``: one file per game, showing what the agent
sees (the 84x84 grayscale frames, enlarged 3x), named with game, epoch and score.

MP4 through ``imageio-ffmpeg``, whose wheel carries its own ffmpeg binary (no system ffmpeg);
if that fails, an animated GIF through Pillow (which matplotlib already brings).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dqn_mlx.core.env import Step

SCALE, FPS = 3, 15


def write_video(frames: list[np.ndarray], path: Path) -> Path:
    """Write (84, 84) uint8 frames as ``path`` (.mp4), or as .gif if the encoder fails."""
    big = [np.repeat(np.repeat(f, SCALE, axis=0), SCALE, axis=1) for f in frames]
    try:
        import imageio_ffmpeg

        height, width = big[0].shape
        writer = imageio_ffmpeg.write_frames(
            str(path),
            (width, height),
            pix_fmt_in="gray",
            fps=FPS,
            macro_block_size=4,
            output_params=["-loglevel", "error"],
        )
        writer.send(None)
        for frame in big:
            writer.send(np.ascontiguousarray(frame).tobytes())
        writer.close()
        return path
    except Exception:
        from PIL import Image

        gif = path.with_suffix(".gif")
        images = [Image.fromarray(f) for f in big]
        images[0].save(gif, save_all=True, append_images=images[1:], duration=1000 // FPS)
        return gif


class EpisodeVideos:
    """An evaluation observer: collects each game's frames and writes its video at the end."""

    def __init__(self, folder: Path, name: str):
        self.folder, self.name = Path(folder), name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.frames: list[np.ndarray] = []
        self.score = 0.0
        self.written: list[Path] = []

    def __call__(self, episode: int, step: Step) -> None:
        self.score += step.reward
        if step.game_over or step.truncated:  # step.frame already shows the next game
            path = self.folder / f"{self.name}_game{episode + 1}_score{self.score:g}.mp4"
            if self.frames:
                self.written.append(write_video(self.frames, path))
            self.frames, self.score = [], 0.0
        else:
            self.frames.append(step.frame.copy())

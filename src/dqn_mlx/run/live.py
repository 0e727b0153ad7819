"""Live metrics: what a run shows from its first finished game, long before an epoch ends.

In the run folder:
- ``games.csv``: one row per finished training game: ``agent_step`` (when it ended; with
  ``--num-envs N``, at the end of the pass of N agent steps in which it ended),
  ``score`` (raw), ``length_agent_steps``;
- ``updates.csv``: one row after every ``every_updates``-th update: ``agent_step``, ``updates``,
  the mean ``loss`` (per sample) and ``mean_max_q`` (the minibatches' mean max_a Q) of the
  updates since the last row, ``epsilon`` and ``agent_steps_per_s`` (over running time:
  stops and epoch ends left out, ``run/clock.py``);
- TensorBoard event files with the same numbers (and each epoch's evaluation), against agent
  steps: ``uvx tensorboard --logdir runs/`` shows every run under the default ``--weights-dir``.
On resume, rows after the resumed agent step are dropped and TensorBoard is told to purge its
events after that step, so the files follow the run as if it had never stopped.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from dqn_mlx.core.game import FinishedGame
from dqn_mlx.core.learner import UpdateStats
from dqn_mlx.core.loop import RunState
from dqn_mlx.files import atomic_write_text
from dqn_mlx.run.clock import RunningClock

GAMES_FILE = "games.csv"
UPDATES_FILE = "updates.csv"
GAMES_COLUMNS = ("agent_step", "score", "length_agent_steps")
UPDATES_COLUMNS = ("agent_step", "updates", "loss", "mean_max_q", "epsilon", "agent_steps_per_s")


EVENTS_SUFFIX = ".dqn"
"""The end of a run's TensorBoard event files' names (``events.out.tfevents.<time>.<host>.dqn``)."""


def live_files(out_dir: Path) -> list[Path]:
    """The files ``LiveMetrics`` writes in ``out_dir`` that exist: a run that saved nothing
    else leaves only these."""
    named = [out_dir / GAMES_FILE, out_dir / UPDATES_FILE]
    events = out_dir.glob(f"events.out.tfevents.*{EVENTS_SUFFIX}")
    return [path for path in [*named, *events] if path.is_file()]


class LiveMetrics:
    """``games.csv``, ``updates.csv`` and TensorBoard events, fed by ``run.train.RunHooks``."""

    def __init__(
        self, out_dir: Path, start_step: int, clock: RunningClock, every_updates: int = 250
    ):
        from tensorboardX import SummaryWriter  # imported when a run starts: --help stays fast

        self.every = every_updates
        self.games = _open_csv(out_dir / GAMES_FILE, GAMES_COLUMNS, start_step)
        self.updates = _open_csv(out_dir / UPDATES_FILE, UPDATES_COLUMNS, start_step)
        self.board = SummaryWriter(
            # events after the resumed step are hidden: they are about to be played again
            str(out_dir),
            purge_step=start_step + 1 if start_step else None,
            flush_secs=10,
            filename_suffix=EVENTS_SUFFIX,
        )
        self.window_loss = self.window_max_q = 0.0
        self.window_count = 0
        self.clock = clock
        self.window_start = (clock.seconds(), start_step)

    def after_step(
        self,
        run: RunState,
        epsilon: float,
        finished: Sequence[FinishedGame],
        updates: Sequence[UpdateStats],
    ) -> None:
        for game in finished:
            self._write(self.games, run.step, {
                "score": game.score, "length_agent_steps": game.length
            }, "game")  # fmt: skip
        for update in updates:
            self.window_loss += update.loss
            self.window_max_q += update.mean_max_q
            self.window_count += 1
            if update.updates % self.every == 0:
                self._write_window(run, epsilon, update.updates)

    def _write_window(self, run: RunState, epsilon: float, updates: int) -> None:
        now, (start_time, start_step) = self.clock.seconds(), self.window_start
        row = {
            "loss": self.window_loss / self.window_count,
            "mean_max_q": self.window_max_q / self.window_count,
            "epsilon": epsilon,
            "agent_steps_per_s": (run.step - start_step) / max(now - start_time, 1e-9),
        }
        self.window_loss = self.window_max_q = 0.0
        self.window_count, self.window_start = 0, (now, run.step)
        self._write(self.updates, run.step, row, "train", {"updates": updates})

    def _write(
        self,
        table: _Table,
        step: int,
        row: dict[str, Any],
        group: str,
        csv_only: dict[str, Any] | None = None,
    ) -> None:
        for name, value in row.items():
            self.board.add_scalar(f"{group}/{name}", value, step)
        table.writer.writerow({"agent_step": step, **row, **(csv_only or {})})
        table.handle.flush()

    def end_epoch(self, record: dict[str, Any]) -> None:
        step = record["agent_steps"]
        self.board.add_scalar("eval/score", record["eval_score_mean"], step)
        self.board.add_scalar("eval/avg_max_q", record["avg_max_q"], step)
        self.board.flush()

    def close(self) -> None:
        self.board.close()
        self.games.handle.close()
        self.updates.handle.close()


class _Table:
    def __init__(self, handle: IO[str], writer: csv.DictWriter[str]):
        self.handle, self.writer = handle, writer


def _complete(row: dict[str, str], columns: tuple[str, ...]) -> bool:
    """False for a row cut short (a write that failed mid-line)."""
    return all(row.get(c) not in (None, "") for c in columns) and row["agent_step"].isdigit()


def _open_csv(path: Path, columns: tuple[str, ...], start_step: int) -> _Table:
    """Open a live CSV for appending, keeping only the rows up to ``start_step`` of an
    earlier part of the run (rewritten atomically)."""
    if path.exists():
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        kept = [r for r in rows if _complete(r, columns) and int(r["agent_step"]) <= start_step]
        lines = [",".join(columns)] + [",".join(r[c] for c in columns) for r in kept]
        atomic_write_text(path, "\n".join(lines) + "\n")
    else:
        atomic_write_text(path, ",".join(columns) + "\n")
    handle = open(path, "a", newline="")  # noqa: SIM115 - closed by LiveMetrics.close
    return _Table(handle, csv.DictWriter(handle, columns, extrasaction="ignore"))

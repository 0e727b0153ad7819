"""The live view of a sweep: one row per run (game, seed, node, agent steps / total, last epoch
score, agent steps/s, state), read from the run folders the runs write (``games.csv``,
``updates.csv``, ``metrics.jsonl``: see ``run/live.py``) and from what the sweep knows of each
run (its nodes and state).

On a terminal the table is redrawn in place (rich, which comes with typer) with the sweep's
events printed above it; otherwise (a log file, a pipe, CI) the events are plain lines and a
plain progress line per running run is printed every ``interval_s`` seconds. At the end, in
both cases, the table and the ``--mode report`` command to run next. No Ray here: the sweep
(``sweep.py``) tells the view what Ray said.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dqn_mlx.errors import UserError
from dqn_mlx.run.metrics import read_metrics
from dqn_mlx.run.resume import quoted

STATES = ("queued", "running", "retried", "done", "failed")
COLUMNS = (
    "game", "seed", "node", "agent steps / total", "last epoch score", "agent steps/s", "state"
)  # fmt: skip
TAIL_BYTES = 4096  # a live CSV's last rows: the files grow for the whole run


@dataclass
class RunView:
    """What the table shows of one run."""

    game: str
    seed: int
    folder: Path
    total_steps: int
    state: str = "queued"
    nodes: list[str] = field(default_factory=list)  # the nodes it ran on, in order
    agent_steps: int = 0
    score: float | None = None  # the last epoch's evaluation score
    rate: float | None = None  # agent steps/s of its last updates.csv row or epoch

    @property
    def name(self) -> str:
        return f"{self.game} seed {self.seed}"

    def read_folder(self) -> None:
        """Agent steps, last epoch score and agent steps/s from the run folder."""
        try:
            records = read_metrics(self.folder)
        except UserError:
            records = []  # a damaged metrics.jsonl: the run itself says so
        last = records[-1] if records else {}
        steps = int(last.get("agent_steps", 0))
        self.score = last.get("eval_score_mean")
        self.rate = last.get("agent_steps_per_s")
        update = _last_row(self.folder / "updates.csv", 6)
        if update is not None and int(update[0]) > steps:
            steps, self.rate = int(update[0]), float(update[5])
        game = _last_row(self.folder / "games.csv", 3)
        self.agent_steps = max(steps, int(game[0]) if game is not None else 0)

    def cells(self) -> tuple[str, ...]:
        return (
            self.game,
            str(self.seed),
            ",".join(self.nodes) or "—",
            f"{self.agent_steps:,} / {self.total_steps:,}",
            "—" if self.score is None else f"{self.score:.2f}",
            "—" if self.rate is None else f"{self.rate:,.0f}",
            self.state,
        )


def _last_row(path: Path, columns: int) -> list[str] | None:
    """The last complete data row of a live CSV (a row being written is left out); None when
    it has none."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - TAIL_BYTES))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    for line in reversed(text.split("\n")[:-1]):  # the last piece: "" or a partial line
        cells = line.rstrip("\r").split(",")
        if len(cells) == columns and cells[0].isdigit():
            try:
                [float(c) for c in cells]
            except ValueError:
                continue
            return cells
    return None


def render_plain(runs: list[RunView]) -> str:
    rows = [COLUMNS, *(run.cells() for run in runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    right = {1, 3, 4, 5}  # numbers
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    )


def rich_table(runs: list[RunView]) -> Any:
    from rich.table import Table

    table = Table(title="sweep", title_justify="left")
    for i, name in enumerate(COLUMNS):
        table.add_column(name, justify="right" if i in (1, 3, 4, 5) else "left", no_wrap=i != 2)
    for run in runs:
        table.add_row(*run.cells())
    return table


class SweepView:
    """Events and the table, on a terminal (``live``) or as plain lines."""

    def __init__(
        self,
        runs: list[RunView],
        weights_dir: Path,
        out: IO[str] | None = None,
        live: bool | None = None,
        interval_s: float = 60.0,
        console: Any = None,
    ):
        self.runs, self.weights_dir = runs, weights_dir
        self.out = out if out is not None else sys.stdout
        self.live_mode = self.out.isatty() if live is None else live
        self.interval = interval_s
        self.last_progress = time.monotonic()
        self.live: Any = None
        if self.live_mode:
            from rich.console import Console
            from rich.live import Live

            self.console = console or Console(file=self.out)
            self.live = Live(
                rich_table(runs), console=self.console, refresh_per_second=1, transient=False
            )
            self.live.start()

    def event(self, text: str) -> None:
        """One line of what happened: above the live table, or a plain line."""
        if self.live is not None:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=self.out, flush=True)

    def refresh(self, now: float | None = None) -> None:
        """Re-read the running runs' folders; redraw, or print a progress line per running
        run every ``interval_s`` seconds."""
        for run in self.runs:
            if run.state in ("running", "retried"):
                run.read_folder()
        if self.live is not None:
            self.live.update(rich_table(self.runs))
            return
        now = time.monotonic() if now is None else now
        if now - self.last_progress < self.interval:
            return
        self.last_progress = now
        for run in self.runs:
            if run.state == "running":
                node = run.nodes[-1] if run.nodes else "?"
                score = "—" if run.score is None else f"{run.score:.2f}"
                rate = "—" if run.rate is None else f"{run.rate:,.0f}"
                self.event(
                    f"{run.name}: agent step {run.agent_steps:,}/{run.total_steps:,} on node "
                    f"{node} | {rate} agent steps/s | last epoch score {score}"
                )

    def leave_terminal(self) -> None:
        """The terminal is gone (the output goes to a log now): plain lines from here on."""
        if self.live is not None:
            console = self.console
            console.is_interactive, console.no_color, console.soft_wrap = False, True, True
            self.live.stop()  # its last frame, once, without colours
            console.line()
            self.live = None

    def close(self) -> None:
        """The final table (every folder read again) and the command to run next."""
        for run in self.runs:
            run.read_folder()
        if self.live is not None:
            self.live.update(rich_table(self.runs), refresh=True)
            self.live.stop()
            self.live = None
        else:
            print(render_plain(self.runs), file=self.out, flush=True)
        self.event(
            "next, the results table: uv run main.py --mode report --weights-dir "
            f"{quoted(self.weights_dir)}"
        )

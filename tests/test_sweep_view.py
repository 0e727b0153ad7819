"""The sweep's live view (fast, no Ray): what a row reads from a run folder, the plain lines
of a log, the table redrawn in place on a terminal, and the end (the table and the command to
run next)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from dqn_mlx.sweep_view import COLUMNS, RunView, SweepView, render_plain


def _run_folder(folder: Path, epochs: list[tuple[int, float, float]], updates: str, games: str):
    folder.mkdir(parents=True)
    lines = [
        {"epoch": n, "agent_steps": steps, "eval_score_mean": score, "agent_steps_per_s": rate}
        for n, (steps, score, rate) in enumerate(epochs, 1)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (folder / "updates.csv").write_text(updates)
    (folder / "games.csv").write_text(games)


UPDATES = "agent_step,updates,loss,mean_max_q,epsilon,agent_steps_per_s\n"
GAMES = "agent_step,score,length_agent_steps\n"


def test_a_row_reads_the_newest_agent_step_score_and_rate_from_the_run_folder(
    tmp_path: Path,
) -> None:
    run = RunView("PongNoFrameskip-v4", 3, tmp_path / "run", 50_000)
    _run_folder(
        run.folder,
        [(10_000, -20.5, 95.0), (20_000, -19.25, 97.0)],
        UPDATES + "21000,5000,0.01,0.2,0.9,101.5\n22000,5250,0.01,0.2,0.9,99",  # a row half written
        GAMES + "20500,-21,800\n21400,-20,900\n",
    )
    run.read_folder()
    assert (run.agent_steps, run.score, run.rate) == (21_400, -19.25, 101.5)
    run.nodes, run.state = ["a1b2c3d4", "e5f6a7b8"], "running"
    assert run.cells() == (
        "PongNoFrameskip-v4", "3", "a1b2c3d4,e5f6a7b8", "21,400 / 50,000", "-19.25", "102",
        "running",
    )  # fmt: skip


def test_a_row_of_a_run_that_has_not_started_shows_dashes(tmp_path: Path) -> None:
    run = RunView("BreakoutNoFrameskip-v4", 0, tmp_path / "none", 2_000)
    run.read_folder()
    assert run.cells() == ("BreakoutNoFrameskip-v4", "0", "—", "0 / 2,000", "—", "—", "queued")


def test_an_updates_row_older_than_the_last_epoch_gives_the_epoch_rate(tmp_path: Path) -> None:
    run = RunView("PongNoFrameskip-v4", 0, tmp_path / "run", 3_000)
    _run_folder(run.folder, [(2_997, 0.0, 55.0)], UPDATES + "2000,125,0.1,0.1,0.9,40.0\n", GAMES)
    run.read_folder()
    assert (run.agent_steps, run.rate) == (2_997, 55.0)


def _views(tmp_path: Path) -> list[RunView]:
    games = ("Pong", "Breakout")
    runs = [RunView(g, s, tmp_path / f"{g}-{s}", 2_000) for g in games for s in (0, 1)]
    for number, run in enumerate(runs):
        _run_folder(run.folder, [(1_797, float(number), 200.0)], UPDATES, GAMES)
        run.nodes = ["a1b2c3d4"] if number % 2 else ["e5f6a7b8"]
    return runs


def test_in_a_log_the_view_is_plain_lines_a_progress_line_per_running_run_and_the_table(
    tmp_path: Path,
) -> None:
    runs = _views(tmp_path)
    runs[0].state, runs[1].state = "running", "retried"
    out = io.StringIO()
    view = SweepView(runs, tmp_path / "weights dir", out=out, interval_s=30.0)
    assert not view.live_mode  # StringIO is no terminal
    view.event("Pong seed 0: running on node e5f6a7b8 (attempt 1)")
    view.refresh(now=view.last_progress + 10)  # before the interval: nothing
    assert out.getvalue() == "Pong seed 0: running on node e5f6a7b8 (attempt 1)\n"
    view.refresh(now=view.last_progress + 31)
    progress = out.getvalue().splitlines()[1:]
    assert progress == [
        "Pong seed 0: agent step 1,797/2,000 on node e5f6a7b8 | 200 agent steps/s | last epoch "
        "score 0.00"
    ]  # the running run only: the retried one waits for a node
    for run in runs:
        run.state = "done"
    view.close()
    lines = out.getvalue().splitlines()
    header, rows, command = lines[2], lines[3:7], lines[7:]  # after the event and progress
    assert header.split("  ")[0].strip() == "game" and "agent steps / total" in header
    assert [h for h in COLUMNS if h not in header] == []
    assert rows[1].split() == [
        "Pong",
        "1",
        "a1b2c3d4",
        "1,797",
        "/",
        "2,000",
        "1.00",
        "200",
        "done",
    ]
    assert command == [
        "next, the results table: uv run main.py --mode report --weights-dir "
        f"'{tmp_path / 'weights dir'}'"
    ]
    assert "\x1b" not in out.getvalue()  # no terminal codes in a log


def test_on_a_terminal_the_table_is_redrawn_in_place_with_the_events_above(
    tmp_path: Path,
) -> None:
    runs = _views(tmp_path)
    runs[2].state = "running"
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    view = SweepView(runs, tmp_path, out=out, live=True, console=console)
    view.event("Breakout seed 0: running on node e5f6a7b8 (attempt 1)")
    view.refresh()
    for run in runs:
        run.state = "done"
    view.close()
    text = out.getvalue()
    assert "\x1b[2K" in text or "\x1b[1A" in text  # the live table erased and drawn again
    assert "Breakout seed 0: running on node e5f6a7b8 (attempt 1)" in text
    final = text[text.rindex("sweep") :]  # the last drawing of the table
    assert all(name in final for name in ("agent steps / total", "last epoch score", "state"))
    assert final.count("done") == 4 and "running" not in final
    assert text.rstrip().endswith(f"uv run main.py --mode report --weights-dir {tmp_path}")


def test_the_plain_table_aligns_every_column(tmp_path: Path) -> None:
    runs = _views(tmp_path)
    for run in runs:
        run.read_folder()
    lines = render_plain(runs).splitlines()
    state = lines[0].index("state")
    assert all(line[state:].strip() == "queued" for line in lines[1:])

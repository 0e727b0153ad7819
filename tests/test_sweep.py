"""--mode sweep on a local Ray: every (game, seed) trains in its own folder, a killed run is
retried and resumes, a finished sweep trains nothing again, and bad input starts nothing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from dqn_mlx.run.resume import load_training_state

ray = pytest.importorskip("ray", reason="the sweep group: uv sync --group sweep")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--learning-starts", "1500", "--replay-size", "3000", "--epoch-updates", "75"]
TINY += ["--eval-steps", "300", "--held-out-states", "64"]


def sweep(weights: Path, *args: str, wait: bool = True) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "sweep", *args]
    command += ["--weights-dir", str(weights), *TINY]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)


def _records(folder: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_sweep_of_two_games_trains_each_in_its_folder_and_a_rerun_trains_nothing(
    tmp_path: Path,
) -> None:
    games = ["--env", "BreakoutNoFrameskip-v4", "--env", "PongNoFrameskip-v4", "--seeds", "0"]
    first = sweep(tmp_path, *games, "--steps", "2000")
    assert first.returncode == 0, first.stderr
    folders = [
        tmp_path / g / "laptop-seed0" for g in ("BreakoutNoFrameskip-v4", "PongNoFrameskip-v4")
    ]
    for folder in folders:
        assert (folder / "metrics.jsonl").exists(), (first.stdout, first.stderr)
        assert [r["agent_steps"] for r in _records(folder)] == [1797, 2000], folder
        assert (folder / "epoch_2.safetensors").exists()
        assert f"seed 0: finished ({folder})" in first.stdout
    table = first.stdout.strip().splitlines()[-3:]
    assert table[0].split()[:4] == ["game", "seed", "agent", "steps"]
    assert all("2,000" in row for row in table[1:])
    report = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--mode", "report", "--weights-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    assert report.returncode == 0
    results = (tmp_path / "RESULTS.md").read_text()
    assert "| BreakoutNoFrameskip-v4 | epoch | 1 |" in results
    assert "| PongNoFrameskip-v4 | epoch | 1 |" in results
    before = _digest(tmp_path / "BreakoutNoFrameskip-v4")
    again = sweep(tmp_path, *games, "--steps", "2000")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("finished already") == 2 and "queued" not in again.stdout
    assert again.stdout.strip().splitlines()[-3:] == table
    assert _digest(tmp_path / "BreakoutNoFrameskip-v4") == before


def test_a_run_killed_with_sigkill_is_retried_and_resumes(tmp_path: Path) -> None:
    folder = tmp_path / "PongNoFrameskip-v4" / "laptop-seed3"
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "sweep", "--env"]
    command += ["PongNoFrameskip-v4", "--seeds", "3", "--steps", "3000", "--weights-dir"]
    command += [str(tmp_path), *TINY]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (folder / "train_state.safetensors").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (folder / "train_state.safetensors").exists(), "no epoch end before the deadline"
    (child,) = [
        p for p in psutil.process_iter(["cmdline"])
        if "--run-name" in (p.info["cmdline"] or []) and str(tmp_path) in p.info["cmdline"]
    ]  # fmt: skip
    saved_step = _records(folder)[-1]["agent_steps"]
    os.kill(child.pid, signal.SIGKILL)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err
    records = _records(folder)
    steps = [r["agent_steps"] for r in records]
    assert steps == sorted(set(steps)), steps  # went on from the saved state, never restarted
    assert load_training_state(folder).run.step == 3000
    assert saved_step in steps and [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    assert (folder / f"epoch_{len(records)}.safetensors").exists()
    assert "seed 3: finished" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "Breakot-v5", "--seeds", "0"], "unknown environment id"),
        (["--env", "PongNoFrameskip-v4", "--seeds", ","], "--seeds is empty"),
        (
            ["--env", "PongNoFrameskip-v4", "--seeds", "0", "--replay-size", "200000000"],
            "lower --replay-size",
        ),
    ],
)
def test_bad_sweep_input_is_one_line_and_starts_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "sweep", *args]
    result = subprocess.run(
        [*command, "--weights-dir", str(tmp_path), "--steps", "2000", *TINY[:2], *TINY[4:6]],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not any(tmp_path.iterdir())

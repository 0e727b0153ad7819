"""README's quick start, run as a new user runs it: it trains, evaluates a shipped agent and
writes a report, and leaves the repository as it was (``git status``), the shipped results
untouched."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[list[str]]:
    """The commands of the README's first bash block (under "Quick start"), as argv lists:
    continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text().split("## Quick start", 1)[1]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def _status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


def test_the_quick_start_leaves_the_shipped_results_and_git_status_as_they_were() -> None:
    commands = quick_start_commands()
    assert [c[:5] for c in commands] == [["uv", "run", "main.py", "--mode", m]
                                         for m in ("train", "eval", "report")]  # fmt: skip
    before_status = _status()
    made = [ROOT / "runs", ROOT / "videos"]
    existed = {p: set(p.rglob("*")) if p.exists() else None for p in made}
    try:
        for command in commands:
            argv = [sys.executable, *command[2:]]  # the suite's interpreter is uv run's
            if command[4] == "eval":
                argv += ["--episodes", "1"]  # the command as given, one game instead of ten
            result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, (command, result.stderr)
        assert _status() == before_status
        shipped = "runs/BreakoutNoFrameskip-v4/laptop-seed0-1500k/"
        assert any(p.name.startswith("epoch_15.eval_episodes") for p in (ROOT / shipped).iterdir())
        assert "PongNoFrameskip-v4" in (ROOT / "runs" / "RESULTS.md").read_text()
    finally:
        for folder, old in existed.items():
            if old is None:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            for path in sorted(set(folder.rglob("*")) - old, reverse=True):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

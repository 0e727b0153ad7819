"""Per-epoch metrics, kept as JSON lines in ``<run dir>/metrics.jsonl`` (one object per epoch).

Keys (units in the name where there is one): ``epoch``, ``agent_steps``, ``emulator_frames``,
``updates``, ``train_scores`` (raw scores of the training episodes that ended this epoch),
``train_score_mean``, ``eval_score_mean`` (raw, epsilon = eval_epsilon; the mean over the
completed games, 0 when none completed, as DeepMind's run_gpu reports it), ``eval_scores``,
``eval_games_completed``, ``eval_agent_steps``, ``avg_max_q`` (on the held-out states),
``loss_mean`` (the TD loss per sample), ``epsilon`` (at the epoch's end),
``agent_steps_per_s`` (this epoch's training rate over running time, ``run/clock.py``;
after a resume, of the steps since it),
``wall_time_s`` (since the run started), ``date`` (the epoch's end, UTC, ISO; None in records
written before the key existed, ``run/formats.py``, and the report shows "—" for them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from dqn_mlx.errors import UserError
from dqn_mlx.files import atomic_write_text
from dqn_mlx.run.formats import metrics_record

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The epochs' records. A last line cut short (a crash while it was written) is dropped
    with a one-line warning on stderr, and the next ``append_metrics`` rewrites the file
    without it; a damaged line before the last is a UserError."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "epoch" not in record:
                raise ValueError("not an epoch's record")
            records.append(metrics_record(record))
        except ValueError:
            if number < len(lines):
                raise UserError(
                    f"{path}: line {number} is not an epoch's record; restore the file or move "
                    "it away (the run's checkpoints and state do not need it)"
                ) from None
            print(
                f"warning: {path}: its last line is incomplete (a write was cut short); it is "
                "dropped and the next epoch's record replaces it",
                file=sys.stderr,
            )
    return records


def append_metrics(run_dir: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Add one epoch's record (rewriting the file atomically); return all records."""
    records = [r for r in read_metrics(run_dir) if r["epoch"] < record["epoch"]] + [record]
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write_text(Path(run_dir) / METRICS_FILE, text)
    return records

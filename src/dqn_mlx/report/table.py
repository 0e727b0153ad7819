"""``--mode report``: every game's evaluation results next to the papers' numbers.

Reads the ``*.eval_<protocol>.json`` files that ``--mode eval`` writes beside each checkpoint,
keeps the newest result per game and protocol (the one trained longest), and writes
``<weights dir>/RESULTS.md``. The papers' numbers come from ``paper_scores.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dqn_mlx.errors import UserError
from dqn_mlx.files import atomic_write_text
from dqn_mlx.report.paper_scores import NATURE_2015, TABLE1_2013

RESULTS_FILE = "RESULTS.md"


def collect_results(weights_dir: Path) -> list[dict[str, Any]]:
    """The newest result per (env id, protocol) found under ``weights_dir``."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(Path(weights_dir).glob("**/*.eval_*.json")):
        try:
            result = json.loads(path.read_text())
            key = (result["env_id"], result["protocol"])
            trained = int(result.get("agent_steps_trained", 0))
        except (ValueError, KeyError, TypeError):
            continue  # not one of ours
        if key not in best or trained >= int(best[key].get("agent_steps_trained", 0)):
            best[key] = {**result, "file": str(path)}
    return [best[k] for k in sorted(best)]


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def render_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "# dqn-mlx results",
        "",
        "Our scores are raw game scores of `--mode eval --protocol ...` runs (files named in the "
        "last column). Paper columns: Mnih et al. 2013, Table 1 (Random, DQN, Human, DQN "
        "Best) and Mnih et al. 2015, Extended Data Table 2 (DQN mean ± std). Sticky-action "
        "(`ALE/...-v5`) results are not comparable with the papers'.",
        "",
        "| game | protocol | ours: mean ± std (best) | games | agent steps trained | sticky | "
        "date | Random 2013 | DQN 2013 | Human 2013 | DQN Best 2013 | DQN Nature 2015 | file |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t13 = TABLE1_2013.get(r["rom"], {})
        n15 = NATURE_2015.get(r["rom"])
        nature = f"{n15['dqn']:g} ± {n15['dqn_std']:g}" if n15 else "—"
        lines.append(
            f"| {r['env_id']} | {r['protocol']} | {r['mean']:.1f} ± {r['std']:.1f} "
            f"({_cell(r['max'])}) | {len(r['scores'])} | {int(r['agent_steps_trained']):,} | "
            f"{'yes' if r['sticky_actions'] else 'no'} | {r['date']} | "
            f"{_cell(t13.get('random'))} | {_cell(t13.get('dqn'))} | {_cell(t13.get('human'))} | "
            f"{_cell(t13.get('dqn_best'))} | {nature} | {Path(r['file']).name} |"
        )
    return "\n".join(lines) + "\n"


def write_report(weights_dir: Path) -> Path:
    results = collect_results(weights_dir)
    if not results:
        raise UserError(
            f"no evaluation results under {weights_dir}; run --mode eval --protocol nature2015 "
            "--load-path <checkpoint> first"
        )
    path = Path(weights_dir) / RESULTS_FILE
    atomic_write_text(path, render_table(results))
    return path

"""``--mode report``: every game's evaluation results next to the papers' numbers.

Reads the ``*.eval_<protocol>.json`` files that ``--mode eval`` writes beside each checkpoint,
keeps per run folder and protocol the result of the checkpoint trained longest, and writes
``<weights dir>/RESULTS.md``: per game and protocol the mean ± std over runs beside the
papers' numbers, then every run. The papers' numbers come from ``paper_scores.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dqn_mlx.errors import UserError
from dqn_mlx.files import atomic_write_text
from dqn_mlx.report.paper_scores import NATURE_2015, TABLE1_2013
from dqn_mlx.run.metrics import read_metrics

RESULTS_FILE = "RESULTS.md"


def collect_results(weights_dir: Path) -> list[dict[str, Any]]:
    """Per run folder and protocol, the result of the longest-trained checkpoint evaluated."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(Path(weights_dir).glob("**/*.eval_*.json")):
        try:
            result = json.loads(path.read_text())
            key = (str(path.parent), result["protocol"])
            trained = int(result.get("agent_steps_trained", 0))
        except (ValueError, KeyError, TypeError):
            continue  # not one of ours
        if key not in best or trained >= int(best[key].get("agent_steps_trained", 0)):
            best[key] = {**result, "file": str(path), "run": path.parent.name}
    results = list(best.values()) + _epoch_results(weights_dir)
    return sorted(results, key=lambda r: (r["env_id"], r["protocol"], r["run"]))


def _epoch_results(weights_dir: Path) -> list[dict[str, Any]]:
    """Per run folder, its last epoch's evaluation (``metrics.jsonl``: epsilon 0.05 for
    ``eval_steps`` agent steps, the 2013 protocol's shape), as protocol ``epoch``: what a run
    or a sweep reports before any ``--mode eval``."""
    import datetime

    from dqn_mlx.core.env import resolve_game

    results = []
    for path in sorted(Path(weights_dir).glob("**/metrics.jsonl")):
        records = read_metrics(path.parent)
        if not records:
            continue
        env_id = path.parent.parent.name.replace("ALE_", "ALE/", 1)
        try:
            game = resolve_game(env_id)
        except UserError:
            continue  # not in a <env-id>/<run-name>/ folder
        last, scores = records[-1], np.array(records[-1]["eval_scores"] or [0.0])
        results.append({
            "env_id": env_id, "rom": game.rom, "protocol": "epoch", "run": path.parent.name,
            "scores": last["eval_scores"], "mean": last["eval_score_mean"],
            "std": float(scores.std()), "max": max(last["eval_scores"], default=None),
            "agent_steps_trained": last["agent_steps"], "sticky_actions": game.sticky_actions > 0,
            "date": datetime.date.fromtimestamp(path.stat().st_mtime).isoformat(),
            "file": str(path),
        })  # fmt: skip
    return results


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _paper_cells(rom: str) -> str:
    t13 = TABLE1_2013.get(rom, {})
    n15 = NATURE_2015.get(rom)
    nature = f"{n15['dqn']:g} ± {n15['dqn_std']:g}" if n15 else "—"
    cells = [t13.get(k) for k in ("random", "dqn", "human", "dqn_best")]
    return " | ".join(_cell(c) for c in cells) + f" | {nature}"


def render_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "# dqn-mlx results",
        "",
        "Raw game scores of `--mode eval --protocol ...` runs, and as protocol `epoch` each "
        "run's last epoch evaluation (epsilon 0.05 for its eval steps). Paper columns: Mnih "
        "et al. 2013, Table 1 (Random, DQN, Human, DQN Best) and Mnih et al. 2015, Extended "
        "Data Table 2 (DQN mean ± std). Sticky-action (`ALE/...-v5`) results are not "
        "comparable with the papers'.",
        "",
        "## Per game and protocol, over runs",
        "",
        "| game | protocol | runs | ours: mean ± std over runs | Random 2013 | DQN 2013 | "
        "Human 2013 | DQN Best 2013 | DQN Nature 2015 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["env_id"], r["protocol"]), []).append(r)
    for (env_id, protocol), runs in groups.items():
        means = np.array([r["mean"] for r in runs])
        lines.append(
            f"| {env_id} | {protocol} | {len(runs)} | {means.mean():.1f} ± {means.std():.1f} | "
            f"{_paper_cells(runs[0]['rom'])} |"
        )
    lines += [
        "",
        "## Every run",
        "",
        "| game | run | protocol | mean ± std (best) | games | agent steps trained | sticky | "
        "date | file |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['env_id']} | {r['run']} | {r['protocol']} | {r['mean']:.1f} ± {r['std']:.1f} "
            f"({_cell(r['max'])}) | {len(r['scores'])} | {int(r['agent_steps_trained']):,} | "
            f"{'yes' if r['sticky_actions'] else 'no'} | {r['date']} | {Path(r['file']).name} |"
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

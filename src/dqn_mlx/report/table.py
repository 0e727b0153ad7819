"""``--mode report``: every game's evaluation results next to the papers' numbers.

Reads the ``*.eval_<protocol>.json`` files that ``--mode eval`` writes beside each checkpoint,
keeps per run folder and protocol the result of the checkpoint trained longest, and writes
``<weights dir>/RESULTS.md``: per game, protocol and training budget the mean over runs beside
the papers' numbers and the human-normalised score, the median of those over games, then every
run. Each run also gives two results of its own records: its last epoch evaluation (protocol
``epoch``) and its training games' mean over its last 250,000 agent steps (protocol
``training``), the measure of Dopamine's published curves, whose range stands beside it. The
papers' numbers come from ``paper_scores.py``. Beside it, ``learning_curves.png``: every run's
epochs, one panel a game (``plots.learning_curves_figure``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from dqn_mlx.errors import UserError
from dqn_mlx.files import atomic_write_text
from dqn_mlx.report.paper_scores import (
    DOPAMINE_ITERATION,
    NATURE_2015,
    TABLE1_2013,
    dopamine_range,
)
from dqn_mlx.run.metrics import METRICS_FILE, read_metrics

RESULTS_FILE = "RESULTS.md"
TRAINING_WINDOW = DOPAMINE_ITERATION  # agent steps: the window of one point of Dopamine's curves
RunRecords = list[tuple[str, Path, list[dict[str, Any]]]]  # env id, run folder, epoch records


def collect_results(weights_dir: Path) -> list[dict[str, Any]]:
    """Per run folder and kind of evaluation (protocol, and the game count of a plain
    ``--episodes`` one), the result of the longest-trained checkpoint evaluated; and each
    run's last epoch evaluation and training window."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(Path(weights_dir).glob("**/*.eval_*.json")):
        try:
            result = json.loads(path.read_text())
            result["protocol"] = protocol_label(result)
            key = (str(path.parent), result["protocol"])
            trained = int(result.get("agent_steps_trained", 0))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # not one of ours
        if key not in best or trained >= int(best[key].get("agent_steps_trained", 0)):
            best[key] = {**result, "file": str(path), "run": path.parent.name}
    runs = run_records(weights_dir)
    results = list(best.values()) + _epoch_results(runs) + _training_results(runs)
    return sorted(results, key=lambda r: (r["env_id"], r["protocol"], r["run"]))


def protocol_label(result: dict[str, Any]) -> str:
    """The protocol's name; a plain ``--episodes N`` evaluation is 'N games, epsilon E', so
    that a one-game look is never averaged with a 30-game protocol."""
    if result["protocol"] != "episodes":
        return str(result["protocol"])
    return f"{len(result['scores'])} games, epsilon {result['epsilon']:g}"


def run_records(weights_dir: Path) -> RunRecords:
    """(env id, run folder, epoch records) of every ``<env-id>/<run>/metrics.jsonl``
    under ``weights_dir`` that holds an epoch, in path order."""
    from dqn_mlx.core.env import resolve_game

    runs = []
    for path in sorted(Path(weights_dir).glob("**/metrics.jsonl")):
        records = read_metrics(path.parent)
        env_id = path.parent.parent.name.replace("ALE_", "ALE/", 1)
        try:
            resolve_game(env_id)
        except UserError:
            continue  # not in a <env-id>/<run-name>/ folder
        if records:
            runs.append((env_id, path.parent, records))
    return runs


def _epoch_results(runs: RunRecords) -> list[dict[str, Any]]:
    """Per run folder, its last epoch's evaluation (``metrics.jsonl``: epsilon 0.05 for
    ``eval_steps`` agent steps, the 2013 protocol's shape), as protocol ``epoch``: what a run
    or a sweep reports before any ``--mode eval``."""
    from dqn_mlx.core.env import resolve_game

    results = []
    for env_id, folder, records in runs:
        game = resolve_game(env_id)
        last, scores = records[-1], np.array(records[-1]["eval_scores"] or [0.0])
        results.append({
            "env_id": env_id, "rom": game.rom, "protocol": "epoch", "run": folder.name,
            "scores": last["eval_scores"], "mean": last["eval_score_mean"],
            "std": float(scores.std()), "max": max(last["eval_scores"], default=None),
            "agent_steps_trained": last["agent_steps"], "sticky_actions": game.sticky_actions > 0,
            "date": last["date"],  # the epoch's own record (None in older ones)
            "file": str(folder / METRICS_FILE),
        })  # fmt: skip
    return results


def training_window_scores(folder: Path, trained: int) -> list[float]:
    """Raw scores of the run's training games (``games.csv``) that ended after agent step
    ``trained - TRAINING_WINDOW`` and by ``trained``: the games of one Dopamine iteration,
    played at the training epsilon. Games after ``trained`` (an epoch still running) are left
    out; no ``games.csv`` (runs older than it) gives none."""
    from dqn_mlx.run.live import GAMES_FILE  # the run's module, which imports MLX

    path = folder / GAMES_FILE
    if not path.is_file():
        return []
    with path.open(newline="") as rows:
        return [
            float(row["score"])
            for row in csv.DictReader(rows)
            if trained - TRAINING_WINDOW < int(row["agent_step"]) <= trained
        ]


def _training_results(runs: RunRecords) -> list[dict[str, Any]]:
    """Per run folder, the mean score of its training games over its last ``TRAINING_WINDOW``
    agent steps up to its last epoch, as protocol ``training``: the measure of each point of
    Dopamine's curves (``DOPAMINE_ADAM_MSE``). Runs with no game in the window give none."""
    from dqn_mlx.core.env import resolve_game
    from dqn_mlx.run.live import GAMES_FILE

    results = []
    for env_id, folder, records in runs:
        trained = int(records[-1]["agent_steps"])
        scores = training_window_scores(folder, trained)
        if not scores:
            continue
        game = resolve_game(env_id)
        results.append({
            "env_id": env_id, "rom": game.rom, "protocol": "training", "run": folder.name,
            "scores": scores, "mean": float(np.mean(scores)), "std": float(np.std(scores)),
            "max": max(scores), "agent_steps_trained": trained,
            "sticky_actions": game.sticky_actions > 0, "date": records[-1]["date"],
            "file": str(folder / GAMES_FILE),
        })  # fmt: skip
    return results


def _dopamine_cell(rom: str, protocol: str, steps: int) -> str:
    """Dopamine's range beside a ``training`` row whose window is one of its iterations."""
    found = dopamine_range(rom, steps) if protocol == "training" else None
    return "—" if found is None else f"{found[0]:.1f} to {found[1]:.1f}"


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def human_normalised(rom: str, score: float) -> float | None:
    """(ours - random) / (human - random), with the 2015 paper's random and human scores (its
    Extended Data Table 2, as the 2015 paper normalises): 0 is random play, 1 is human."""
    paper = NATURE_2015.get(rom)
    if paper is None:
        return None
    return (score - paper["random"]) / (paper["human"] - paper["random"])


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def _mean_and_spread(runs: list[dict[str, Any]]) -> str:
    """Several runs: their mean ± the spread of their means (over seeds). One run: its mean ±
    the spread over its games, the form of DQN 2015's column (the one seed's variation)."""
    if len(runs) == 1:
        return f"{runs[0]['mean']:.1f} ± {runs[0]['std']:.1f}"
    means = np.array([r["mean"] for r in runs])
    return f"{means.mean():.1f} ± {means.std():.1f}"


Group = tuple[str, str, int]  # game, protocol, agent steps trained


def group_results(results: list[dict[str, Any]]) -> dict[Group, list[dict[str, Any]]]:
    """Runs that compare: the same game, evaluated the same way, after the same number of
    agent steps of training. A one-minute run never joins a 1.5M-agent-step one."""
    groups: dict[Group, list[dict[str, Any]]] = {}
    for r in results:
        key = (r["env_id"], r["protocol"], int(r["agent_steps_trained"]))
        groups.setdefault(key, []).append(r)
    return groups


def render_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "# dqn-mlx results",
        "",
        "Raw game scores of `--mode eval --protocol ...` runs, and as protocol `epoch` each "
        "run's last epoch evaluation (epsilon 0.05 for its eval steps). Rows group the runs of "
        "one game, protocol and training budget (agent steps); the ± is the spread over runs "
        "where there are several, and over the games of the one run where there is one. "
        "DQN 2013: Mnih et al. 2013, Table 1. DQN, Random and Human 2015: Mnih et al. 2015, "
        "Extended Data Table 2 (no-op starts); human-normalised = (ours - Random 2015) / "
        "(Human 2015 - Random 2015). Sticky-action (`ALE/...-v5`) results are not comparable "
        "with the papers'. Protocol `training` is the mean score of each run's training games "
        "that ended in its last 250,000 agent steps, at the training epsilon: the measure of "
        "Dopamine's published curves. Dopamine Adam+MSE: the range of its 5 runs of \"DQN "
        '(Adam + MSE in JAX)" over the same 250,000 agent steps (sticky actions, epsilon 0.01), '
        "beside each `training` row that ends where one of its iterations does (1,500,000: "
        "agent steps 1.25M-1.5M).",
        "",
        "## Per game, protocol and training budget",
        "",
        "| game | protocol | agent steps trained | runs | ours | DQN 2013 | DQN 2015 | "
        "Random 2015 | Human 2015 | human-normalised | Dopamine Adam+MSE |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    normalised: dict[tuple[str, int], list[float]] = {}
    for (env_id, protocol, steps), runs in group_results(results).items():
        means = np.array([r["mean"] for r in runs])
        rom = runs[0]["rom"]
        score = human_normalised(rom, float(means.mean()))
        if score is not None and not runs[0]["sticky_actions"]:
            normalised.setdefault((protocol, steps), []).append(score)
        n15 = NATURE_2015.get(rom, {})
        dqn15 = f"{n15['dqn']:g} ± {n15['dqn_std']:g}" if n15 else "—"
        lines.append(
            f"| {env_id} | {protocol} | {steps:,} | {len(runs)} | {_mean_and_spread(runs)} | "
            f"{_cell(TABLE1_2013.get(rom, {}).get('dqn'))} | {dqn15} | "
            f"{_cell(n15.get('random'))} | {_cell(n15.get('human'))} | {_percent(score)} | "
            f"{_dopamine_cell(rom, protocol, steps)} |"
        )
    lines += ["", "## Median human-normalised score", ""]
    lines += [
        f"- {protocol}, {steps:,} agent steps: {_percent(float(np.median(scores)))} over "
        f"{len(scores)} game{'s' if len(scores) > 1 else ''}"
        for (protocol, steps), scores in sorted(normalised.items())
    ] or ["- no game with the papers' settings"]
    lines += [
        "",
        "## Every run",
        "",
        "| game | run | protocol | mean ± std over games (best) | games | agent steps trained | "
        "sticky | date | file |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['env_id']} | {r['run']} | {r['protocol']} | {r['mean']:.1f} ± {r['std']:.1f} "
            f"({_cell(r['max'])}) | {len(r['scores'])} | {int(r['agent_steps_trained']):,} | "
            f"{'yes' if r['sticky_actions'] else 'no'} | {r.get('date') or '—'} | "
            f"{Path(r['file']).name} |"
        )
    return "\n".join(lines) + "\n"


def write_report(weights_dir: Path) -> list[Path]:
    """Write ``RESULTS.md`` into ``weights_dir``, and ``learning_curves.png`` beside it where a
    run has recorded an epoch; the paths written."""
    results = collect_results(weights_dir)
    if not results:
        raise UserError(
            f"no evaluation results under {weights_dir}; run --mode eval --protocol nature2015 "
            "--load-path <checkpoint> first"
        )
    written, text = [Path(weights_dir) / RESULTS_FILE], render_table(results)
    runs = run_records(weights_dir)
    if runs:
        from dqn_mlx.report.plots import LEARNING_CURVES, draw_learning_curves

        written.append(Path(weights_dir) / LEARNING_CURVES)
        draw_learning_curves(written[1], runs)
        text += (
            "\n## Learning curves\n\nEvery run's epoch evaluations (solid) and mean training "
            f"score (dashed) against agent steps, one panel a game.\n\n![learning curves]"
            f"({LEARNING_CURVES})\n"
        )
    atomic_write_text(written[0], text)
    return written

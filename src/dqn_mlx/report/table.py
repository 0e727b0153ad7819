"""``--mode report``: every game's evaluation results next to the papers' numbers.

Reads the ``*.eval_<protocol>.json`` files that ``--mode eval`` writes beside each checkpoint,
keeps per run folder and protocol the result of the checkpoint trained longest, and writes
``<weights dir>/RESULTS.md``: per game, protocol and training budget the mean over runs with
its 95% bootstrap interval beside the papers' numbers and the human-normalised score; over
games, the IQM and the median of the human-normalised scores with their 95% stratified-bootstrap
intervals (``aggregate``); then every run. Each run also gives two results of its own records:
its last epoch evaluation (protocol ``epoch``) and its training games' mean over its last
250,000 agent steps (protocol ``training``), the measure of Dopamine's published curves, whose
mean over its 5 runs, with its interval and aggregates from the same code, stands beside it.
The papers' numbers come from ``paper_scores.py``. Beside it, ``learning_curves.png``: each
game's runs (``plots.learning_curves_figure``) and the performance profile.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dqn_mlx.errors import UserError
from dqn_mlx.files import atomic_write_text
from dqn_mlx.report.aggregate import Estimate, aggregates, game_mean
from dqn_mlx.report.paper_scores import (
    DOPAMINE_ITERATION,
    NATURE_2015,
    TABLE1_2013,
    dopamine_scores,
)
from dqn_mlx.run.metrics import METRICS_FILE, read_metrics

RESULTS_FILE = "RESULTS.md"
TRAINING_WINDOW = DOPAMINE_ITERATION  # agent steps: the window of one point of Dopamine's curves
RunRecords = list[tuple[str, Path, list[dict[str, Any]]]]  # env id, run folder, epoch records


def collect_results(weights_dir: Path, runs: RunRecords | None = None) -> list[dict[str, Any]]:
    """Per run folder and kind of evaluation (protocol, and the game count of a plain
    ``--episodes`` one), the result of the longest-trained checkpoint evaluated; and each
    run's last epoch evaluation and training window (of ``runs``, read from ``weights_dir``
    where not given). A file that cannot be read is left out with a one-line warning naming
    it, and the report goes on with the rest."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(Path(weights_dir).glob("**/*.eval_*.json")):
        try:
            result = read_result(path)
        except ValueError as exc:
            warn(path, f"{exc}; it is left out of the report")
            continue
        key = (str(path.parent), result["protocol"])
        trained = int(result["agent_steps_trained"])
        if key not in best or trained >= int(best[key]["agent_steps_trained"]):
            best[key] = {**result, "file": str(path), "run": path.parent.name}
    runs = run_records(weights_dir) if runs is None else runs
    results = list(best.values()) + _epoch_results(runs) + _training_results(runs)
    return sorted(results, key=lambda r: (r["env_id"], r["protocol"], r["run"]))


def warn(path: Path, why: str) -> None:
    print(f"warning: {path}: {why}", file=sys.stderr)


def read_result(path: Path) -> dict[str, Any]:
    """One ``--mode eval`` result file, checked: a ValueError saying what is wrong with it
    (not JSON, a field missing or of the wrong type, a score that is not a finite number). An
    evaluation that completed no game is marked ``no_game``: it has no score."""
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not an evaluation result ({type(exc).__name__})") from None
    if not isinstance(result, dict):
        raise ValueError("not an evaluation result (not a JSON object)")
    try:
        scores = [float(x) for x in result["scores"]]
        numbers = [*scores, float(result["mean"]), float(result.get("std", 0.0))]
        int(result.get("agent_steps_trained", 0))
        result["protocol"] = protocol_label(result)
        str(result["env_id"]), str(result["rom"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        why = f"no {exc}" if isinstance(exc, KeyError) else "a field of the wrong type"
        raise ValueError(f"not an evaluation result ({why})") from None
    if not all(math.isfinite(x) for x in numbers):
        raise ValueError("a score that is not a finite number (NaN or infinite)")
    result["agent_steps_trained"] = int(result.get("agent_steps_trained", 0))
    result["no_game"] = result.get("completed") is False
    return result


def protocol_label(result: dict[str, Any]) -> str:
    """The protocol's name; a plain ``--episodes N`` evaluation is 'N games, epsilon E', so
    that a one-game look is never averaged with a 30-game protocol."""
    if result["protocol"] != "episodes":
        return str(result["protocol"])
    return f"{len(result['scores'])} games, epsilon {result['epsilon']:g}"


def run_records(weights_dir: Path) -> RunRecords:
    """(env id, run folder, epoch records) of every ``<env-id>/<run>/metrics.jsonl``
    under ``weights_dir`` that holds an epoch, in path order. A metrics file that cannot be
    read, or whose records lack a field the report draws or have one of the wrong type, is
    left out with a one-line warning naming it."""
    from dqn_mlx.core.env import resolve_game

    runs = []
    for path in sorted(Path(weights_dir).glob("**/metrics.jsonl")):
        env_id = path.parent.parent.name.replace("ALE_", "ALE/", 1)
        try:
            resolve_game(env_id)
        except UserError:
            continue  # not in a <env-id>/<run-name>/ folder
        try:
            records = read_metrics(path.parent)
            for number, record in enumerate(records, 1):
                check_epoch_record(record, number)
        except (UserError, ValueError) as exc:
            warn(path, f"{str(exc).removeprefix(f'{path}: ')}; this run is left out of the report")
            continue
        if records:
            runs.append((env_id, path.parent, records))
    return runs


EPOCH_NUMBERS = ("epoch", "agent_steps", "emulator_frames", "eval_score_mean")


def check_epoch_record(record: dict[str, Any], number: int) -> None:
    """A ValueError naming the line and the field where an epoch's record lacks a field the
    report reads, or holds one of the wrong type."""
    for key in EPOCH_NUMBERS:
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"line {number}: {key} is {value!r}, not a number")
    for key in ("eval_scores", "train_scores"):
        values = record.get(key, [])
        if not isinstance(values, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in values
        ):
            raise ValueError(f"line {number}: {key} is {values!r}, not a list of scores")
    for key in ("train_score_mean", "eval_games_completed", "avg_max_q"):
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"line {number}: {key} is {value!r}, not a number")


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
            "file": str(folder / METRICS_FILE), "no_game": last.get("eval_games_completed") == 0,
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


def _dopamine_estimate(rom: str, protocol: str, steps: int) -> Estimate | None:
    """Dopamine's mean over its 5 runs, with its interval, beside a ``training`` row whose
    window is one of its iterations."""
    runs = dopamine_scores(rom, steps) if protocol == "training" else None
    return None if runs is None else game_mean(runs)


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


def _percent_estimate(found: Estimate | None) -> str:
    return "—" if found is None else found.scaled(100).text("{:.0f}%")


def ours_cell(runs: list[dict[str, Any]]) -> str:
    """Several runs: their mean with its 95% bootstrap interval over runs. One run: its mean ±
    the spread over its games, the form of DQN 2015's column (the one seed's variation)."""
    if len(runs) == 1:
        return f"{runs[0]['mean']:.1f} ± {runs[0]['std']:.1f}"
    return str(game_mean([r["mean"] for r in runs]))


def _best_cell(rom: str, protocol: str, runs: list[dict[str, Any]]) -> str:
    """Where the row is of the 2013 protocol: our best single game beside 2013 Table 1's "DQN
    Best" (the best game of its one agent)."""
    if protocol != "nips2013":
        return "—"
    best = max((r["max"] for r in runs if r["max"] is not None), default=None)
    return f"{_cell(best)} / {_cell(TABLE1_2013.get(rom, {}).get('dqn_best'))}"


Group = tuple[str, str, int]  # game, protocol, agent steps trained


def group_results(results: list[dict[str, Any]]) -> dict[Group, list[dict[str, Any]]]:
    """Runs that compare: the same game, evaluated the same way, after the same number of
    agent steps of training. A one-minute run never joins a 1.5M-agent-step one, and an
    evaluation that ended no game joins none (it has no score)."""
    groups: dict[Group, list[dict[str, Any]]] = {}
    for r in results:
        if r.get("no_game"):
            continue
        key = (r["env_id"], r["protocol"], int(r["agent_steps_trained"]))
        groups.setdefault(key, []).append(r)
    return groups


Normalised = dict[tuple[str, int], dict[str, list[float]]]  # (protocol, steps) -> rom -> runs


def normalised_runs(results: list[dict[str, Any]]) -> Normalised:
    """Per protocol and budget, per game, each run's human-normalised score: the games the
    aggregates are over (the papers' settings only: no sticky actions, a game of their
    tables)."""
    found: Normalised = {}
    for (_, protocol, steps), runs in group_results(results).items():
        rom = runs[0]["rom"]
        scores = [human_normalised(rom, r["mean"]) for r in runs]
        if runs[0]["sticky_actions"] or None in scores:
            continue
        found.setdefault((protocol, steps), {})[rom] = [s for s in scores if s is not None]
    return found


def dopamine_normalised(roms: list[str], steps: int) -> list[list[float]] | None:
    """Dopamine's 5 runs of each of ``roms``, human-normalised, over the iteration ending at
    ``steps``; None where it has none there for one of the games."""
    games = []
    for rom in roms:
        runs = dopamine_scores(rom, steps)
        if runs is None:
            return None
        games.append([human_normalised(rom, score) or 0.0 for score in runs])
    return games


def _aggregate_lines(normalised: Normalised) -> list[str]:
    """The aggregate table: per protocol and budget, the IQM and the median of the
    human-normalised scores with their 95% stratified-bootstrap intervals, and Dopamine's over
    the same games beside the ``training`` rows."""
    lines = [
        "| protocol | agent steps trained | games | runs | IQM | median | "
        "Dopamine Adam+MSE IQM | Dopamine Adam+MSE median |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (protocol, steps), games in sorted(normalised.items()):
        iqm, median = aggregates(list(games.values()))
        dopamine = dopamine_normalised(list(games), steps) if protocol == "training" else None
        theirs = aggregates(dopamine) if dopamine else (None, None)
        counts = sorted({len(runs) for runs in games.values()})
        per_game = f" ({counts[0]}-{counts[-1]} per game)" if len(counts) > 1 else ""
        lines.append(
            f"| {protocol} | {steps:,} | {len(games)} | {iqm.runs}{per_game} | "
            f"{_percent_estimate(iqm)} | "
            f"{_percent_estimate(median)} | {_percent_estimate(theirs[0])} | "
            f"{_percent_estimate(theirs[1])} |"
        )
    return lines if normalised else ["- no game with the papers' settings"]


def _score_cell(r: dict[str, Any]) -> str:
    if r.get("no_game"):
        return "no game ended"
    return f"{r['mean']:.1f} ± {r['std']:.1f} ({_cell(r['max'])})"


def render_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "# dqn-mlx results",
        "",
        "Raw game scores of `--mode eval --protocol ...` runs, and as protocol `epoch` each "
        "run's last epoch evaluation (epsilon 0.05 for its eval steps). Rows group the runs of "
        "one game, protocol and training budget (agent steps). Several runs: their mean with "
        "its 95% bootstrap interval [low, high] over runs, and each run's mean; one run: its "
        "mean ± the spread over its games. "
        "DQN 2013: Mnih et al. 2013, Table 1 (and, beside a `nips2013` row's best game, its "
        "DQN Best). DQN, Random and Human 2015: Mnih et al. 2015, "
        "Extended Data Table 2 (no-op starts); human-normalised = (ours - Random 2015) / "
        "(Human 2015 - Random 2015). Sticky-action (`ALE/...-v5`) results are not comparable "
        "with the papers'. Protocol `training` is the mean score of each run's training games "
        "that ended in its last 250,000 agent steps, at the training epsilon: the measure of "
        "Dopamine's published curves. Dopamine Adam+MSE: the mean of its 5 runs of \"DQN "
        '(Adam + MSE in JAX)" over the same 250,000 agent steps (sticky actions, epsilon 0.01), '
        "with its interval, beside each `training` row that ends where one of its iterations "
        "does (1,500,000: agent steps 1.25M-1.5M). An evaluation that ended no game has no "
        'score: it is in no row or aggregate, only under "Every run".',
        "",
        "## Per game, protocol and training budget",
        "",
        "| game | protocol | agent steps trained | runs | ours | each run | best game: ours / "
        "DQN Best 2013 | DQN 2013 | DQN 2015 | Random 2015 | Human 2015 | human-normalised | "
        "Dopamine Adam+MSE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (env_id, protocol, steps), runs in group_results(results).items():
        rom = runs[0]["rom"]
        score = human_normalised(rom, float(np.mean([r["mean"] for r in runs])))
        n15 = NATURE_2015.get(rom, {})
        dqn15 = f"{n15['dqn']:g} ± {n15['dqn_std']:g}" if n15 else "—"
        dopamine = _dopamine_estimate(rom, protocol, steps)
        each = ", ".join(f"{r['mean']:.1f}" for r in runs)
        lines.append(
            f"| {env_id} | {protocol} | {steps:,} | {len(runs)} | {ours_cell(runs)} | {each} | "
            f"{_best_cell(rom, protocol, runs)} | "
            f"{_cell(TABLE1_2013.get(rom, {}).get('dqn'))} | {dqn15} | "
            f"{_cell(n15.get('random'))} | {_cell(n15.get('human'))} | {_percent(score)} | "
            f"{'—' if dopamine is None else dopamine} |"
        )
    lines += [
        "",
        "## Over games: human-normalised scores",
        "",
        "The interquartile mean (IQM: the mean of the middle half of every game's every run) and "
        "the median of the games' means, with 95% stratified-bootstrap intervals [low, high] "
        "(each game's runs resampled, the games fixed; Agarwal et al., NeurIPS 2021); no "
        "interval where a game has a single run. Every game weighs the same, however many runs "
        "it has: the IQM repeats each game's runs to a common count before it pools them (as "
        "rliable's runs x games matrix has), and the median is of the games' means.",
        "",
        *_aggregate_lines(normalised_runs(results)),
        "",
        "## Every run",
        "",
        "| game | run | protocol | mean ± std over games (best) | games | agent steps trained | "
        "sticky | date | file |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['env_id']} | {r['run']} | {r['protocol']} | {_score_cell(r)} | "
            f"{len(r['scores'])} | {int(r['agent_steps_trained']):,} | "
            f"{'yes' if r['sticky_actions'] else 'no'} | {r.get('date') or '—'} | "
            f"{Path(r['file']).name} |"
        )
    return "\n".join(lines) + "\n"


def summary(results: list[dict[str, Any]]) -> str:
    """What ``--mode report`` prints: per game, protocol and budget our score over runs (and
    each run's), then the aggregate table; ``RESULTS.md`` holds the papers' columns too."""
    lines = ["game | protocol | agent steps trained | runs | ours | each run | Dopamine Adam+MSE"]
    for (env_id, protocol, steps), runs in group_results(results).items():
        dopamine = _dopamine_estimate(runs[0]["rom"], protocol, steps)
        each = ", ".join(f"{r['mean']:.1f}" for r in runs)
        lines.append(
            f"{env_id} | {protocol} | {steps:,} | {len(runs)} | {ours_cell(runs)} | {each} | "
            f"{'—' if dopamine is None else dopamine}"
        )
    aggregate = [line.strip("| ") for line in _aggregate_lines(normalised_runs(results))]
    return "\n".join([*lines, "", "human-normalised, over games (95% intervals in [ ]):",
                      *(line for line in aggregate if not line.startswith("---"))])  # fmt: skip


def profile_sets(normalised: Normalised) -> list[tuple[str, list[list[float]]]]:
    """The performance profiles the figure shows: of the budget with the most games (the
    longest of those), ours at each protocol, and Dopamine's over the same games beside our
    ``training`` protocol."""
    if not normalised:
        return []
    _, steps = max((len(games), steps) for (_, steps), games in normalised.items())
    sets = []
    for (protocol, budget), games in sorted(normalised.items()):
        if budget == steps:
            sets.append((f"ours, {protocol}", list(games.values())))
        dopamine = dopamine_normalised(list(games), budget) if protocol == "training" else None
        if budget == steps and dopamine:
            sets.append(("Dopamine Adam+MSE, training", dopamine))
    return sets


def write_report(weights_dir: Path) -> list[Path]:
    """Write ``RESULTS.md`` into ``weights_dir``, and ``learning_curves.png`` beside it where a
    run has recorded an epoch, and print ``summary``; the paths written."""
    runs = run_records(weights_dir)
    results = collect_results(weights_dir, runs)
    if not results:
        raise UserError(
            f"no evaluation results under {weights_dir}; run --mode eval --protocol nature2015 "
            "--load-path <checkpoint> first"
        )
    written = [Path(weights_dir) / RESULTS_FILE]
    if runs:
        from dqn_mlx.report.plots import LEARNING_CURVES, draw_learning_curves

        written.append(Path(weights_dir) / LEARNING_CURVES)
        draw_learning_curves(written[1], runs, profile_sets(normalised_runs(results)))
    atomic_write_text(written[0], results_text(results, runs))
    print(summary(results))
    return written


def results_text(results: list[dict[str, Any]], runs: RunRecords) -> str:
    """``RESULTS.md``: the tables of ``results``, then, where a run has recorded an epoch,
    the learning curves' figure (``LEARNING_CURVES``, drawn beside it)."""
    text = render_table(results)
    if runs:
        from dqn_mlx.report.plots import LEARNING_CURVES

        text += (
            "\n## Learning curves\n\nEach game's epoch evaluations (solid) and mean training "
            "score (dashed) against agent steps: several runs of one budget as their mean and "
            "range; last, the performance profile of the human-normalised scores.\n\n"
            f"![learning curves]({LEARNING_CURVES})\n"
        )
    return text

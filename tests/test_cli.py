"""End to end, as a user types it: train on real ALE Breakout, evaluate, and bad inputs."""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import platform
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # trains or runs main.py end to end (-m 'not slow' skips)

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--steps",
    "2000",
    "--learning-starts",
    "1500",
    "--replay-size",
    "3000",
    "--epoch-updates",
    "75",
    "--eval-steps",
    "300",
    "--held-out-states",
    "64",
    "--batch-size",  # the run machinery, not learning: a small minibatch is enough
    "8",
]


def run_main(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    weights = tmp_path_factory.mktemp("weights")
    result = run_main(
        "--mode",
        "train",
        "--env",
        "BreakoutNoFrameskip-v4",
        "--seed",
        "3",
        "--weights-dir",
        str(weights),
        "--run-name",
        "tiny",
        *TINY,
    )
    assert result.returncode == 0, result.stderr
    return weights / "BreakoutNoFrameskip-v4" / "tiny"


def test_train_writes_checkpoints_metrics_and_plots(trained: Path) -> None:
    # The default preset (laptop: an update per 4 agent steps): 125 updates at 75 per epoch,
    # one full epoch and a final shorter one.
    assert (trained / "epoch_1.safetensors").stat().st_size > 100_000
    assert (trained / "epoch_2.safetensors").exists()
    for plot in ("rewards_plot.png", "q_values_plot.png"):
        assert (trained / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0]["updates"] == 75 and records[1]["updates"] == 125
    assert records[1]["agent_steps"] == 2000
    assert records[1]["emulator_frames"] == 8000
    for key in ("eval_score_mean", "avg_max_q", "loss_mean", "epsilon", "agent_steps_per_s"):
        assert isinstance(records[0][key], float), key
    _, meta = mx.load(str(trained / "epoch_1.safetensors"), return_metadata=True)
    assert meta["env_id"] == "BreakoutNoFrameskip-v4" and meta["preset"] == "laptop"
    assert json.loads(meta["action_meanings"]) == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    assert meta["epoch"] == "1" and meta["agent_steps"] == str(records[0]["agent_steps"])


def test_eval_needs_only_the_checkpoint(trained: Path) -> None:
    result = run_main(
        "--mode", "eval", "--load-path", str(trained / "epoch_2.safetensors"), "--episodes", "2"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("episode ") >= 2 and "mean " in result.stdout
    assert "BreakoutNoFrameskip-v4" in result.stdout and "epsilon 0.05" in result.stdout


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _bad_files(tmp: Path, trained: Path) -> dict[str, Path]:
    good = (trained / "epoch_1.safetensors").read_bytes()
    files = {
        "text": tmp / "notes.safetensors",
        "truncated": tmp / "cut.safetensors",
        "no_meta": tmp / "plain.safetensors",
        "other_arch": tmp / "arch.safetensors",
    }
    files["text"].write_text("hello, not weights")
    files["truncated"].write_bytes(good[: len(good) // 2])
    arrays, meta = mx.load(str(trained / "epoch_1.safetensors"), return_metadata=True)
    mx.save_safetensors(str(files["no_meta"]), arrays)
    config = json.loads(meta["config"])
    config["network"] = "nips2013"  # trained with the default (Nature) network
    mx.save_safetensors(
        str(files["other_arch"]), arrays, metadata={**meta, "config": json.dumps(config)}
    )
    return files


BAD_INPUTS = [
    (["--mode", "play"], "Invalid value for '--mode'"),
    (["--preset", "nature2105"], "Invalid value for '--preset'"),
    (["--mode", "eval", "--protocol", "nature"], "Invalid value for '--protocol'"),
    (["--device", "tpu"], "Invalid value for '--device'"),
    (["--steps", "abc"], "Invalid value for '--steps'"),
    (["--bogus"], "No such option: --bogus"),
    (["--env", "Breakot-v5"], "unknown environment id"),
    (["--env", "CartPole-v1"], "not an Atari game"),
    (["--steps", "0"], "--steps must be in [1, 100,000,000,000], got 0"),
    (["--replay-size", "-3"], "--replay-size must be >= 1"),
    (["--replay-size", "2000000000"], "--replay-size 2,000,000,000 needs"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--learning-starts", "5000", "--steps", "100"], "must be below --steps"),
    (["--set", "gama=0.9"], "unknown hyperparameter 'gama'"),
    (["--set", "gamma"], "--set expects name=value"),
    (["--set", "loss=l1"], "choose one of squared, huber"),
    (["--weights-dir", "{text}/sub"], "cannot write to"),
    (["--resume", "nowhere"], "no train_state.safetensors there"),
    (["--resume", "{trained}", "--replay-size", "100"], "--replay-size: saved 3,000, given 100"),
    (["--resume", "{trained}", "--preset", "nips2013"], "--preset: saved laptop, given nips2013"),
    (["--resume", "{trained}", "--set", "gamma=0.9"], "--set gamma=...: saved 0.99, given 0.9"),
    (["--weights-dir", "{weights}", "--run-name", "tiny"], "already holds a run; continue it"),
    (["--resume", "{trained}", "--run-name", "other"], "--run-name other: --resume continues"),
    (["--resume", "{trained}", "--steps", "10"], "already took 2,000 agent steps"),
    (["--resume", "{text}"], "not a readable training state"),
    (["--mode", "eval"], "needs --load-path"),
    (["--mode", "eval", "--load-path", "{good}", "--episodes", "0"], "--episodes must be positive"),
    (["--mode", "eval", "--load-path", "{good}", "--epsilon", "2"], "--epsilon must be in [0, 1]"),
    (["--mode", "eval", "--load-path", "missing.safetensors"], "does not exist"),
    (["--mode", "eval", "--load-path", "{trained}"], "is a directory"),
    (["--mode", "eval", "--load-path", "{text}"], "not a readable safetensors"),
    (["--mode", "eval", "--load-path", "{truncated}"], "not a readable safetensors"),
    (["--mode", "eval", "--load-path", "{no_meta}"], "no dqn-mlx metadata"),
    (["--mode", "eval", "--load-path", "{other_arch}"], "do not match a nips2013 network"),
    (
        ["--mode", "eval", "--load-path", "{good}", "--env", "PongNoFrameskip-v4"],
        "is another game (pong) than the checkpoint's BreakoutNoFrameskip-v4 (breakout)",
    ),
    # a flag of another mode is refused, not ignored
    (["--load-path", "{good}"], "--load-path is a flag of --mode eval; --mode train does not"),
    (["--video", "{tmp}/v", "--episodes", "3"], "--episodes and --video are flags of --mode eval"),
    (["--protocol", "nature2015"], "--protocol is a flag of --mode eval;"),
    (
        ["--mode", "eval", "--load-path", "{good}", "--replay-size", "5"],
        "--replay-size is a flag of --mode train, sweep; --mode eval does not read it",
    ),
    (["--mode", "eval", "--load-path", "{good}", "--weights-dir", "{tmp}/w"], "--weights-dir is"),
    (["--mode", "eval", "--load-path", "{shipped}", "--video", "{text}"], "is an existing file"),
    (
        ["--mode", "eval", "--load-path", "{good}", "--eval-steps", "500"],
        "--eval-steps sets the length of --protocol nips2013 only; without --protocol, eval",
    ),
    (
        [
            "--mode",
            "eval",
            "--load-path",
            "{good}",
            "--protocol",
            "nature2015",
            "--eval-steps",
            "9",
        ],
        "--protocol nature2015 plays a number of games: drop --eval-steps",
    ),
    (
        ["--set", "--weights-dir", "{tmp}/w"],
        "--set expects name=value (e.g. --set gamma=0.98), got the flag --weights-dir",
    ),
    (["--mode", "report", "--seed", "1"], "--seed is a flag of --mode train, eval;"),
    (["--mode", "bench", "--resume", "{trained}"], "--resume is a flag of --mode train;"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_one_line_nonzero_and_touches_nothing(
    args: list[str], message: str, trained: Path, tmp_path: Path
) -> None:
    paths = {
        **_bad_files(tmp_path, trained),
        "trained": trained,
        "weights": trained.parent.parent,
        "good": trained / "epoch_1.safetensors",
        "shipped": ROOT
        / "weights"
        / "PongNoFrameskip-v4"
        / "laptop-seed0-1500k"
        / "epoch_15.safetensors",
        "tmp": tmp_path,
    }
    args = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args]
    before, files_before = _digest(trained), _tree(tmp_path)
    own_output = args[:2] == ["--mode", "eval"] or "--weights-dir" in args or "--resume" in args
    # a weights dir that does not exist yet: a refusal must not create it (or <env-id>/ in it)
    extra = [] if own_output else ["--weights-dir", str(tmp_path / "new" / "weights")]
    result = run_main(*args, *extra)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert "run folder:" not in result.stdout  # refused before anything was set up
    assert _digest(trained) == before
    assert _tree(tmp_path) == files_before  # no folder and no file left behind


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_bench_prints_every_figure_as_name_value_unit() -> None:
    result = run_main("--mode", "bench", "--steps", "100", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    figures = {}
    for line in result.stdout.strip().splitlines():
        name, value, unit = line.split(" ")
        figures[name] = (value, unit)
    expected = {
        "device",
        "compute",
        "blas_gflops",
        "update_ms_nips2013",
        "act_ms_nips2013",
        "update_ms_nature2015",
        "act_ms_nature2015",
        *(
            f"update_{part}_ms_{preset}"
            for part in ("target", "learning_pass", "optimizer", "optimizer_subnormal")
            for preset in ("nips2013", "nature2015")
        ),
        "env_agent_steps_per_s",
        "replay_insert_us",
        "replay_sample_ms",
        "replay_bytes_per_transition",
        "end_to_end_nature2015",
        "end_to_end_nature2015_envs4",
        "peak_memory",
        "share_alone",
        "share_beside_eval",
        "share_pair_slower",
        "share_pair_together",
    }
    assert expected <= figures.keys()
    # stderr: what it measures first, a line as each part starts, a summary in words last
    said = result.stderr.strip().splitlines()
    assert said[0].startswith("bench: measuring 5 parts: ") and "minutes" in said[0]
    parts = [line for line in said if line.startswith("bench: part ")]
    assert [line.split(":")[1] for line in parts] == [f" part {n} of 5" for n in range(1, 6)]
    assert "bench: share round 1 of 1" in result.stderr
    assert said[-2].startswith("bench: summary: a Nature update (batch 32) takes ")
    assert said[-1].startswith("bench: summary: beside an evaluation a training keeps ")
    assert 0 < float(figures["share_pair_slower"][0]) <= float(figures["share_pair_together"][0])
    assert figures["device"][0] == "cpu"
    on_x86_linux = sys.platform == "linux" and platform.machine() == "x86_64"
    assert figures["compute"][0].startswith("oneDNN" if on_x86_linux else "MLX")
    assert figures["replay_bytes_per_transition"] == ("7063", "bytes")
    for name in expected - {"device", "compute"}:
        assert float(figures[name][0]) > 0, name


def test_nature2015_protocol_plays_30_capped_games(trained: Path) -> None:
    weights = trained / "epoch_2.safetensors"
    result = run_main(
        "--mode", "eval", "--load-path", str(weights), "--protocol", "nature2015", "--seed", "7"
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "protocol nature2015" in out and "sticky actions no" in out and "seed 7" in out
    results = trained / "epoch_2.eval_nature2015.BreakoutNoFrameskip-v4.30games.seed7.json"
    summary = json.loads(results.read_text())
    assert summary["protocol"] == "nature2015" and len(summary["scores"]) == 30
    assert summary["epsilon"] == 0.05 and summary["agent_steps_trained"] == 2000
    # Each game lasts at most 18,000 emulator frames = 4,500 agent steps at frame skip 4.
    assert summary["agent_steps"] <= 30 * 4_500


def test_eval_films_every_game_in_colour_and_traces_the_values(
    trained: Path, tmp_path: Path
) -> None:
    weights = trained / "epoch_2.safetensors"
    result = run_main(
        "--mode", "eval", "--load-path", str(weights), "--episodes", "2", "--seed", "7",
        "--video", str(tmp_path / "videos"), "--value-trace",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (results,) = trained.glob("epoch_2.eval_episodes.BreakoutNoFrameskip-v4.2games.seed7.json")
    scores = json.loads(results.read_text())["scores"]
    videos = sorted(
        (tmp_path / "videos").iterdir(),
        key=lambda v: int(v.name.split("game")[1][:-4].split("_")[0]),
    )
    assert len(videos) == 2 and all(v.stat().st_size > 1_000 for v in videos)
    assert [v.name for v in videos] == [
        f"breakout_epoch_2_game{n}_score{score:g}.mp4" for n, score in enumerate(scores, 1)
    ]
    # the game's own screen, in colour, 3x: 630x480 (its sharpness: tests/test_video.py)
    size, frame, _ = _first_frame(videos[0])
    assert size == (480, 630) and frame.shape == (630, 480, 3)
    assert np.abs(frame[..., 0].astype(int) - frame[..., 2]).max() > 50  # not grayscale
    trace = trained / "epoch_2_value_trace.png"
    assert trace.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and trace.stat().st_size > 5_000


def _first_frame(video: Path) -> tuple[tuple[int, int], np.ndarray, float]:
    """(width, height), the first frame as RGB, and the duration in seconds of an MP4."""
    from test_video import read_video

    frames, meta = read_video(video)
    return meta["size"], frames[0], float(meta["duration"])


def test_video_view_agent_films_what_the_agent_sees(trained: Path, tmp_path: Path) -> None:
    weights = trained / "epoch_2.safetensors"
    command = ["--mode", "eval", "--load-path", str(weights), "--episodes", "1"]
    result = run_main(*command, "--video", str(tmp_path), "--video-view", "agent")
    assert result.returncode == 0, result.stderr
    (video,) = tmp_path.iterdir()
    size, frame, _ = _first_frame(video)
    assert size == (252, 252)  # 84x84, 3x
    channels = frame.astype(int)
    assert np.abs(channels[..., 0] - channels[..., 2]).max() <= 8  # gray (up to YUV rounding)


def test_nips2013_protocol_counts_agent_steps(trained: Path) -> None:
    weights = trained / "epoch_1.safetensors"
    result = run_main(
        "--mode",
        "eval",
        "--load-path",
        str(weights),
        "--protocol",
        "nips2013",
        "--eval-steps",
        "600",
    )
    assert result.returncode == 0, result.stderr
    (results,) = trained.glob("epoch_1.eval_nips2013.BreakoutNoFrameskip-v4.*games.seed*.json")
    summary = json.loads(results.read_text())
    assert results.name.endswith(f".{len(summary['scores'])}games.seed{summary['seed']}.json")
    assert summary["agent_steps"] == 600
    assert summary["max"] == max(summary["scores"])  # the "DQN Best" column
    assert "600 agent steps" in result.stdout


def test_report_puts_our_scores_beside_the_papers(tmp_path: Path) -> None:
    for env_id, run, mean, steps in [
        ("BreakoutNoFrameskip-v4", "a", 12.5, 1000),
        ("BreakoutNoFrameskip-v4", "a", 30.0, 5000),  # run a's longest-trained result
        ("BreakoutNoFrameskip-v4", "b", 20.0, 5000),
        ("ALE/Pong-v5", "c", -19.0, 2000),
    ]:
        folder = tmp_path / env_id.replace("/", "_") / run
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "protocol": "nature2015",
            "env_id": env_id,
            "rom": "pong" if "Pong" in env_id else "breakout",
            "sticky_actions": env_id.startswith("ALE/"),
            "scores": [mean - 1, mean + 1],
            "mean": mean,
            "std": 1.0,
            "max": mean + 1,
            "agent_steps_trained": steps,
            "date": "2026-11-22",
        }
        (folder / f"epoch_{steps}.eval_nature2015.json").write_text(json.dumps(record))
    result = run_main("--mode", "report", "--weights-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "learning_curves.png").exists()  # no run recorded an epoch
    lines = (tmp_path / "RESULTS.md").read_text().splitlines()
    over_runs = [line for line in lines if line.startswith("| BreakoutNoFrameskip-v4 | nature")]
    # runs a (30) and b (20) at 5,000 agent steps; a's shorter result is not a row of its own
    # their mean with its 95% bootstrap interval over the two runs, and each run's mean
    assert over_runs[0].startswith(
        "| BreakoutNoFrameskip-v4 | nature2015 | 5,000 | 2 | 25.0 [20.0, 30.0] | 30.0, 20.0 | — |"
    )
    # DQN 2013 (Table 1); DQN, random and human 2015; (25 - 1.7) / (31.8 - 1.7) = 77%
    assert over_runs[0].endswith("| 168 | 401.2 ± 26.9 | 1.7 | 31.8 | 77% | — |")
    runs = [line for line in lines if line.startswith("| BreakoutNoFrameskip-v4 | ")][1:]
    assert len(runs) == 2 and "| a | nature2015 | 30.0 ± 1.0 (31) |" in runs[0]
    assert "5,000" in runs[0] and "| b |" in runs[1] and "| 2026-11-22 |" in runs[0]
    pong = [line for line in lines if line.startswith("| ALE/Pong-v5")]
    # one run: the ± is over its games
    assert "| 1 | -19.0 ± 1.0 | -19.0 | — | 20 | 18.9 ± 1.3 | -20.7 | 9.3 |" in pong[0]
    assert "| yes |" in pong[1]
    # sticky actions are not the papers' setting: the aggregates are over Breakout alone, its
    # two runs' human-normalised scores 94% and 61%
    assert "| nature2015 | 5,000 | 1 | 2 | 77% [61%, 94%] | 77% [61%, 94%] | — | — |" in lines
    empty = run_main("--mode", "report", "--weights-dir", str(tmp_path / "none"))
    assert empty.returncode == 2 and "no evaluation results" in empty.stderr


def test_report_keeps_a_tiny_run_apart_from_a_long_one(trained: Path, tmp_path: Path) -> None:
    """The README's one-minute run beside a shipped 1.5M-agent-step one: two rows, never one
    averaged row; a one-game look is its own protocol; dates come from the runs' records; each
    run's training games over its last 250,000 agent steps are a row, with Dopamine's range
    beside the one whose window is Dopamine's (1.25M-1.5M)."""
    import shutil

    shipped = ROOT / "weights" / "BreakoutNoFrameskip-v4" / "laptop-seed0-1500k"
    long_run = tmp_path / "BreakoutNoFrameskip-v4" / "laptop-seed0-1500k"
    long_run.mkdir(parents=True)
    for name in ("metrics.jsonl", "games.csv", "epoch_15.eval_nature2015.json"):
        shutil.copy(shipped / name, long_run / name)
    tiny = tmp_path / "BreakoutNoFrameskip-v4" / "tiny"
    shutil.copytree(trained, tiny, ignore=shutil.ignore_patterns("*.json"))
    look = run_main("--mode", "eval", "--load-path", str(tiny / "epoch_2.safetensors"),
                    "--episodes", "1")  # fmt: skip
    assert look.returncode == 0, look.stderr
    result = run_main("--mode", "report", "--weights-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "RESULTS.md").read_text().splitlines()
    grouped = [line for line in table if line.count("|") == 14]  # the first table's rows
    rows = [line.split(" | ") for line in grouped if line.startswith("| BreakoutNoFrameskip")]
    keys = sorted((row[1], row[2], row[3]) for row in rows)
    assert keys == [
        ("1 games, epsilon 0.05", "2,000", "1"),
        ("epoch", "1,500,000", "1"),
        ("epoch", "2,000", "1"),
        ("nature2015", "1,500,000", "1"),
        ("training", "1,500,000", "1"),
        ("training", "2,000", "1"),
    ], keys
    # every group is a single run: its mean ± the spread over its games
    shipped_eval = json.loads((shipped / "epoch_15.eval_nature2015.json").read_text())
    nature = next(row for row in rows if row[1] == "nature2015")
    assert nature[4] == f"{shipped_eval['mean']:.1f} ± {shipped_eval['std']:.1f}", nature
    with (shipped / "games.csv").open() as games:
        window = [float(g["score"]) for g in csv.DictReader(games)
                  if 1_250_000 < int(g["agent_step"]) <= 1_500_000]  # fmt: skip
    training = next(row for row in rows if row[1:3] == ["training", "1,500,000"])
    assert training[4].startswith(f"{sum(window) / len(window):.1f} ± "), training
    assert training[-1] == "27.8 [27.4, 28.2] |", training  # Dopamine Adam+MSE, iteration 5
    tiny_training = next(row for row in rows if row[1:3] == ["training", "2,000"])
    assert tiny_training[-1] == "— |", tiny_training  # not Dopamine's window
    every_run = (tmp_path / "RESULTS.md").read_text().split("## Every run")[1]
    tiny_epoch = next(line for line in every_run.splitlines() if "| tiny | epoch |" in line)
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert f"| {today} |" in tiny_epoch  # from the tiny run's own record
    # both runs' epochs in one panel, drawn beside the table and shown in it
    curves = tmp_path / "learning_curves.png"
    assert f"learning curves in {curves}" in result.stdout
    assert curves.read_bytes().startswith(b"\x89PNG")
    assert "![learning curves](learning_curves.png)" in (tmp_path / "RESULTS.md").read_text()


def test_the_default_preset_keeps_breakouts_values_bounded(tmp_path: Path) -> None:
    """The main command's preset must not diverge early: 500 updates on real Breakout keep
    the average max-Q on the held-out states under 5 (rewards are clipped to 1). The 2013
    preset, with its summed loss and no target network, fails this: the same command with
    ``--preset nips2013`` measured 51 at its second epoch (its 500th update)."""
    result = run_main(
        "--mode",
        "train",
        "--env",
        "BreakoutNoFrameskip-v4",
        "--steps",
        "3000",  # (3,000 - 1,000) / 4 = 500 updates
        "--learning-starts",
        "1000",
        "--replay-size",
        "3000",
        "--epoch-updates",
        "250",
        "--eval-steps",
        "200",
        "--held-out-states",
        "32",
        "--seed",
        "0",
        "--weights-dir",
        str(tmp_path),
        "--run-name",
        "bounded",
    )
    assert result.returncode == 0, result.stderr
    run = tmp_path / "BreakoutNoFrameskip-v4" / "bounded"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["updates"] for r in records] == [250, 500]
    assert all(0 < r["avg_max_q"] < 5 for r in records), [r["avg_max_q"] for r in records]


def _train_tiny(weights: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["--mode", "train", "--env", "BreakoutNoFrameskip-v4", "--weights-dir", str(weights)]
    return run_main(*args, *TINY, *extra)


def test_every_run_gets_its_own_folder_and_none_is_overwritten(tmp_path: Path) -> None:
    for extra in (["--seed", "1"], ["--seed", "2"], ["--run-name", "mine"]):
        result = _train_tiny(tmp_path, *extra)
        assert result.returncode == 0, result.stderr
        assert "evaluate it: uv run main.py --mode eval --load-path" in result.stdout
    runs = sorted((tmp_path / "BreakoutNoFrameskip-v4").iterdir())
    names = [run.name for run in runs]
    assert len(runs) == 3 and "mine" in names, names
    assert {n.split("-")[1] for n in names if n != "mine"} == {"seed1", "seed2"}
    for run in runs:  # every run's two epochs are intact (updates at agent steps 1501, 1505..)
        lines = (run / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["agent_steps"] for line in lines] == [1797, 2000], run
    before = _digest(tmp_path / "BreakoutNoFrameskip-v4" / "mine")
    refused = _train_tiny(tmp_path, "--run-name", "mine")
    assert refused.returncode == 2 and "already holds a run" in refused.stderr
    assert "--resume" in refused.stderr and "--run-name" in refused.stderr
    assert _digest(tmp_path / "BreakoutNoFrameskip-v4" / "mine") == before


def test_the_starting_command_plus_resume_continues_the_run(tmp_path: Path) -> None:
    first = _train_tiny(tmp_path, "--run-name", "r", "--seed", "5")
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "BreakoutNoFrameskip-v4" / "r"
    again = _train_tiny(tmp_path, "--run-name", "r", "--seed", "5", "--resume", str(folder))
    assert again.returncode == 2 and "already took 2,000 agent steps" in again.stderr
    longer = ["--run-name", "r", "--seed", "5", "--set", "gamma=0.99", "--set", "loss=squared"]
    longer += ["--resume", str(folder), "--steps", "2300"]  # saved values, given again: fine
    resumed = run_main(*_tiny_command(tmp_path), *longer)
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["agent_steps"] == 2300
    changed = run_main(*_tiny_command(tmp_path), "--seed", "6", "--resume", str(folder))
    assert changed.returncode == 2 and "--seed: saved 5, given 6" in changed.stderr


def _tiny_command(weights: Path) -> list[str]:
    """The tiny training command, without --steps (the resumed run extends it)."""
    args = ["--mode", "train", "--env", "BreakoutNoFrameskip-v4", "--weights-dir", str(weights)]
    tiny = [a for i, a in enumerate(TINY) if TINY[i] != "--steps" and TINY[i - 1] != "--steps"]
    return args + tiny


def _limit_file_size() -> None:
    """In the child: files may grow to 12 MB, and a longer write fails (EFBIG) instead of
    killing the process (SIGXFSZ ignored), as on a full disk."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (12 << 20, 12 << 20))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_write_that_fails_mid_run_stops_it_with_one_line_and_intact_files(
    tmp_path: Path,
) -> None:
    """The first checkpoint (6.7 MB) fits; the training state (28 MB) does not: MLX's
    save_safetensors raises RuntimeError. One line, exit 2, no temporary file, and the
    checkpoint written before stays loadable."""
    args = ["--mode", "train", "--weights-dir", str(tmp_path), "--run-name", "full", *TINY]
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
        preexec_fn=_limit_file_size,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not write to"), lines
    assert "MB free" in lines[0] and "the last complete checkpoint there is kept" in lines[0]
    folder = tmp_path / "BreakoutNoFrameskip-v4" / "full"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporaries
    assert not (folder / "train_state.safetensors").exists()
    arrays = mx.load(str(folder / "epoch_1.safetensors"))
    assert len(arrays) == 10 and all(np.isfinite(np.array(a)).all() for a in arrays.values())


def test_the_plain_path_a_mac_runs_trains_and_evaluates_from_the_command_line(
    tmp_path: Path,
) -> None:
    """``--no-accel``: MLX's own layers and optimizer, the path of a Mac or any machine
    without the oneDNN layers, end to end: a tiny training run, then its checkpoint played."""
    tiny = ["--preset", "nips2013", "--steps", "540", "--learning-starts", "500"]
    tiny += ["--replay-size", "1000", "--epoch-updates", "10", "--eval-steps", "50"]
    tiny += ["--held-out-states", "16", "--weights-dir", str(tmp_path), "--run-name", "plain"]
    trained = run_main("--mode", "train", "--no-accel", "--device", "cpu", *tiny)
    assert trained.returncode == 0, trained.stderr
    assert "MLX's own layers and optimizer (--no-accel)" in trained.stdout.splitlines()[0]
    checkpoint = tmp_path / "BreakoutNoFrameskip-v4" / "plain" / "epoch_1.safetensors"
    assert checkpoint.exists()
    played = run_main(
        "--mode", "eval", "--no-accel", "--load-path", str(checkpoint),
        "--protocol", "nips2013", "--eval-steps", "100",
    )  # fmt: skip
    assert played.returncode == 0, played.stderr
    assert "Traceback" not in played.stdout + played.stderr


def test_help_of_a_mode_lists_only_its_flags_and_the_defaults() -> None:
    listed = set(re.findall(r"^│ (--[a-z-]+)", run_main("--mode", "eval", "--help").stdout, re.M))
    assert {"--load-path", "--protocol", "--video", "--episodes", "--seed", "--device"} <= listed
    assert not {"--replay-size", "--resume", "--run-name", "--seeds", "--weights-dir"} & listed
    full = run_main("-h")
    assert full.returncode == 0
    squeezed = " ".join(full.stdout.replace("│", " ").split())  # rich wraps the help text
    assert "10,000,000, laptop preset" in squeezed  # --steps
    assert "1,000,000 transitions = 7.06 GB, laptop preset" in squeezed  # --replay-size
    assert "--mode MODE --help" in squeezed


def test_the_help_states_the_replay_memorys_size_in_gb() -> None:
    from dqn_mlx.core.replay import BYTES_PER_TRANSITION
    from dqn_mlx.flags import shown_default

    gb = 1_000_000 * BYTES_PER_TRANSITION / 1e9
    assert shown_default("replay_size") == f"1,000,000 transitions = {gb:.2f} GB, laptop preset"


def test_the_installed_command_is_main_py() -> None:
    script = Path(sys.executable).parent / "dqn-mlx"  # [project.scripts], made by the install
    result = subprocess.run(
        [str(script), "--mode", "eval", "--replay-size", "5"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: --replay-size is a flag of --mode train, sweep")


def test_eval_prints_each_game_as_it_ends_with_the_scores_so_far_and_an_eta(
    trained: Path,
) -> None:
    """Where stdout is no terminal (here a pipe), a plain line per game: k of N, its score and
    agent steps, the scores so far and an ETA; the same scores as the final summary's."""
    weights = trained / "epoch_2.safetensors"
    result = run_main("--mode", "eval", "--load-path", str(weights), "--episodes", "3",
                      "--seed", "11")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if re.match(r"game \d/3: ", line)]
    summary = [float(x) for x in re.findall(r"^episode \d: raw score (\S+)$", result.stdout, re.M)]
    assert len(lines) == 3 and len(summary) == 3, result.stdout
    for k, line in enumerate(lines, 1):
        assert line.startswith(f"game {k}/3: score {summary[k - 1]:g} in "), line
        shown = ", ".join(f"{score:g}" for score in summary[:k])
        assert f"| scores so far {shown} (mean {np.mean(summary[:k]):.1f}) |" in line, line
        assert re.search(r"\| [\d,]+ agent steps in [\dhm]+s, ETA [\dhm]+s$", line), line
    assert lines[-1].endswith("ETA 0s")
    # a game that ends before the summary: the lines come before it, as the games end
    assert result.stdout.index(lines[-1]) < result.stdout.index("episode 1: raw score")


def test_a_run_reports_every_agent_step_it_was_asked_for_and_ends_on_its_epochs_rate(
    tmp_path: Path,
) -> None:
    """125 updates in one epoch: the last (agent step 1,997: one every 4 agent steps from
    1,501) ends the epoch, and the run goes on to 2,000. The epoch's record and checkpoint
    count the 2,000 agent steps asked for, and the last progress line shows the rate that
    record gives, not one timed over the last 3 agent steps and the epoch end's saves."""
    args = ["--mode", "train", "--weights-dir", str(tmp_path), "--run-name", "whole"]
    at = TINY.index("--epoch-updates")
    tiny = [*TINY[:at], "--epoch-updates", "125", *TINY[at + 2 :]]
    result = run_main(*args, *tiny)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "BreakoutNoFrameskip-v4" / "whole"
    (record,) = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert (record["agent_steps"], record["updates"]) == (2000, 125)
    _, meta = mx.load(str(folder / "epoch_1.safetensors"), return_metadata=True)
    assert meta["agent_steps"] == "2000"
    progress = [line for line in result.stdout.splitlines() if " agent steps/s " in line]
    assert progress[-1].startswith("learning | agent step 2,000/2,000"), progress
    shown = float(re.findall(r"\| ([\d,]+) agent steps/s \|", progress[-1])[0].replace(",", ""))
    assert shown == pytest.approx(record["agent_steps_per_s"], rel=0.02, abs=1), progress[-1]


def test_an_evaluation_plays_on_after_its_terminal_closes_and_saves_its_scores(
    tmp_path: Path,
) -> None:
    """Eval on a terminal of its own (a pty); closing it sends SIGHUP. The evaluation plays
    its games to the end, printing to hangup.log beside the checkpoint, and writes its scores
    as it would have (before, a closed terminal lost the whole evaluation)."""
    import shutil

    from terminal import close_terminal_when

    checkpoint = tmp_path / "epoch_15.safetensors"
    shutil.copy(ROOT / "weights/PongNoFrameskip-v4/laptop-seed0-1500k/epoch_15.safetensors",
                checkpoint)  # fmt: skip
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "eval", "--load-path"]
    command += [str(checkpoint), "--episodes", "2", "--seed", "1000"]
    code = close_terminal_when(command, lambda screen: b"game 1/2" in screen, ROOT, 120)
    assert code == 0, (tmp_path / "hangup.log").read_text()
    (result,) = tmp_path.glob("epoch_15.eval_episodes.*.json")
    assert json.loads(result.read_text())["scores"] == [-5.0, -15.0]  # as on a terminal
    assert "mean -10.00" in (tmp_path / "hangup.log").read_text()


def test_a_training_whose_output_pipe_closes_goes_on_and_logs_to_its_folder(
    tmp_path: Path,
) -> None:
    """`uv run main.py ... | head` (or a `tee` that died): the reader of the run's stdout goes
    away, and the next write would fail. The run goes on to its end with its output in
    hangup.log (before, it stopped with "could not write to <run folder>", blaming the
    folder, and lost the work since its last state)."""
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "train", "--env"]
    command += ["PongNoFrameskip-v4", "--weights-dir", str(tmp_path), "--run-name", "piped"]
    command += [*TINY, "--threads", "1"]
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
    assert run.stdout is not None and run.stderr is not None
    run.stdout.close()  # the reader goes away before the run's first line
    err = run.stderr.read()
    assert run.wait(timeout=300) == 0, err
    folder = tmp_path / "PongNoFrameskip-v4" / "piped"
    assert "done: checkpoints, metrics and plots in" in (folder / "hangup.log").read_text()
    records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["agent_steps"] == 2000

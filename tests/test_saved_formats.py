"""Files written before ``--num-envs`` (one game, one replay stream) still load: a run started
with an earlier version resumes with this one (``run/formats.py`` reads them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dqn_mlx.core.replay import ReplayStreams
from dqn_mlx.run.formats import LEGACY_REPLAY_FILE, run_state_from_json
from dqn_mlx.run.resume import load_replay, replay_file, save_replay


def test_a_state_with_one_game_record_reads_as_one_game() -> None:
    saved = {"step": 7, "epoch": 1, "game": {"episode_seed": 3, "episode_actions": [1, 2]}}
    run = run_state_from_json(saved)
    assert run.step == 7 and len(run.games) == 1
    assert (run.games[0].episode_seed, run.games[0].episode_actions) == (3, [1, 2])
    flat = run_state_from_json({"step": 2, "episode_seed": 9, "score": 1.0})  # before GameRecord
    assert (flat.games[0].episode_seed, flat.games[0].score) == (9, 1.0)
    older = run_state_from_json({"step": 5, "epoch_start_step": 4})  # before 2026-11-27
    assert older.step == 5


def _filled(streams: int, steps: int) -> ReplayStreams:
    replay = ReplayStreams(40, 4, batch_size=4, streams=streams)
    rng = np.random.default_rng(0)
    for t in range(steps):
        for game in range(streams):
            frame = rng.integers(0, 256, (84, 84), dtype=np.uint8)
            replay.add(game, frame, t % 3, 1.0, t % 11 == 0, t % 11 == 1)
    return replay


def test_a_replay_file_of_one_stream_without_sizes_loads(tmp_path: Path) -> None:
    old = _filled(1, 55)  # wrapped: cursor 15
    stream = old.streams[0]
    np.savez_compressed(  # the format written before --num-envs
        tmp_path / LEGACY_REPLAY_FILE,
        frames=stream.frames[: stream.size],
        actions=stream.actions[: stream.size],
        rewards=stream.rewards[: stream.size],
        terminals=stream.terminals[: stream.size],
        starts=stream.starts[: stream.size],
        cursor=np.array(stream.cursor),
        capacity=np.array(stream.capacity),
        agent_step=np.array(55),
    )
    new = ReplayStreams(40, 4, batch_size=4, streams=1)
    assert load_replay(tmp_path, new, 55, LEGACY_REPLAY_FILE) is None
    a, b = old.sample(4, np.random.default_rng(1)), new.sample(4, np.random.default_rng(1))
    assert new.streams[0].cursor == 15 and np.array_equal(a.states, b.states)


def test_streams_of_unequal_sizes_round_trip_and_another_game_count_is_refused(
    tmp_path: Path,
) -> None:
    old = _filled(4, 13)  # 10 transitions per stream, wrapped
    rng = np.random.default_rng(3)
    for game, extra in ((1, 4), (3, 2)):  # streams of unequal sizes (as after a cut refill)
        old.streams[game].size = 10 - extra
        old.streams[game].cursor = 10 - extra
        old.streams[game].frames[10 - extra :] = 0
    save_replay(tmp_path, old, 52)
    new = ReplayStreams(40, 4, batch_size=4, streams=4)
    new.streams[0].frames[:] = rng.integers(0, 256, new.streams[0].frames.shape, np.uint8)
    assert load_replay(tmp_path, new, 52, replay_file(52)) is None
    for a, b in zip(old.streams, new.streams, strict=True):
        assert (a.cursor, a.size) == (b.cursor, b.size)
        for name in ("frames", "actions", "rewards", "terminals", "starts"):
            assert np.array_equal(getattr(a, name)[: a.size], getattr(b, name)[: b.size]), name
    other = ReplayStreams(40, 4, batch_size=4, streams=2)
    why = load_replay(tmp_path, other, 52, replay_file(52))
    assert why is not None and "4 games" in why


def test_saving_the_replay_never_holds_its_frames_twice(tmp_path: Path) -> None:
    """A 1M-transition replay is 7 GB: a second copy while saving killed a long run (the
    machine's memory ran out). The saved file reads with ``np.load`` like a ``savez``'s."""
    import tracemalloc

    replay = ReplayStreams(16_000, 4, batch_size=4, streams=2)
    rng = np.random.default_rng(0)
    for stream in replay.streams:  # 2 x 8,000 frames of noise: 113 MB, barely compressible
        stream.frames[:] = rng.integers(0, 256, stream.frames.shape, np.uint8)
        stream.size = stream.cursor = len(stream.frames)
    frames_bytes = sum(stream.frames.nbytes for stream in replay.streams)
    tracemalloc.start()
    try:
        save_replay(tmp_path, replay, 16_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < frames_bytes / 4, f"saving allocated {peak:,} bytes for {frames_bytes:,}"
    with np.load(tmp_path / replay_file(16_000)) as data:
        joined = np.concatenate([stream.frames for stream in replay.streams])
        assert np.array_equal(data["frames"], joined)
        assert list(data["sizes"]) == [8_000, 8_000]


def test_an_epoch_record_written_before_its_date_reads_with_none(tmp_path: Path) -> None:
    import json

    from dqn_mlx.run.metrics import append_metrics, read_metrics

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "agent_steps": 10}) + "\n")
    assert read_metrics(tmp_path) == [{"epoch": 1, "agent_steps": 10, "date": None}]
    records = append_metrics(tmp_path, {"epoch": 2, "agent_steps": 20, "date": "2026-12-01"})
    assert [r["date"] for r in records] == [None, "2026-12-01"]

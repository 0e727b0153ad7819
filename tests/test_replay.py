"""Replay memory against a brute-force reference built from the full transition history."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from dqn_mlx.core.replay import (
    BYTES_PER_TRANSITION,
    ReplayMemory,
    ReplayStreams,
    check_replay_fits,
)
from dqn_mlx.errors import UserError

H = 4


def frame_for(t: int) -> np.ndarray:
    """A frame that encodes its time step, so stacks can be decoded (marker 1 = not padding)."""
    f = np.zeros((84, 84), dtype=np.uint8)
    f[0, 0], f[0, 1], f[0, 2] = t % 256, t // 256, 1
    return f


def decode(stack: np.ndarray) -> list[int | None]:
    return [None if s[0, 2] == 0 else int(s[0, 0]) + 256 * int(s[0, 1]) for s in stack]


def fill(capacity: int, steps: int, seed: int) -> tuple[ReplayStreams, list[dict]]:
    """Add ``steps`` transitions of one game with random terminals, truncations and life-loss
    terminals."""
    rng = np.random.default_rng(seed)
    memory = ReplayStreams(capacity, H, batch_size=8)
    history: list[dict] = []
    start = True
    for t in range(steps):
        kind = rng.choice(["none", "terminal", "truncated", "life"], p=[0.8, 0.08, 0.06, 0.06])
        terminal = kind in ("terminal", "life")
        record = {
            "t": t,
            "action": int(rng.integers(4)),
            "reward": float(rng.choice([-1, 0, 1])),
            "terminal": terminal,
            "start": start,
        }
        memory.add(0, frame_for(t), record["action"], record["reward"], terminal, start)
        history.append(record)
        start = kind in ("terminal", "truncated")  # a life loss does not start a new episode
    return memory, history


def reference_stack(history: list[dict], t: int) -> list[int | None]:
    """Frames t-3..t, None (zeros) before the episode start of t."""
    out: list[int | None] = []
    for s in range(t - H + 1, t + 1):
        crosses = s < 0 or any(history[u]["start"] for u in range(s + 1, t + 1))
        out.append(None if crosses else s)
    return out


def reference_valid(history: list[dict], capacity: int, t: int) -> bool:
    newest = len(history) - 1
    oldest = max(0, len(history) - capacity)
    if t >= newest or t < oldest:
        return False
    if len(history) >= capacity and t < oldest + H - 1:
        return False
    return history[t]["terminal"] or not history[t + 1]["start"]


@pytest.mark.parametrize(
    ("capacity", "steps"), [(50, 30), (50, 50), (50, 51), (37, 200), (16, 1000)]
)
def test_stacks_and_validity_match_brute_force(capacity: int, steps: int) -> None:
    replay, history = fill(capacity, steps, seed=capacity + steps)
    (memory,) = replay.streams
    oldest = max(0, steps - capacity)
    for t in range(oldest, steps):
        slot = np.array([t % capacity])
        assert bool(memory.is_valid(slot)[0]) == reference_valid(history, capacity, t), t
        if reference_valid(history, capacity, t):
            assert decode(memory.gather_stacks(slot)[0]) == reference_stack(history, t), t
            assert decode(memory.gather_stacks((slot + 1) % capacity)[0]) == reference_stack(
                history, t + 1
            ), t


def test_sampled_batches_are_valid_transitions_with_matching_fields() -> None:
    capacity, steps = 64, 300
    memory, history = fill(capacity, steps, seed=7)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        batch = memory.sample(8, rng)
        assert batch.states.dtype == np.uint8 and batch.states.shape == (8, H, 84, 84)
        for i in range(8):
            t = decode(batch.states[i])[-1]
            assert t is not None and reference_valid(history, capacity, t)
            seen.add(t)
            assert decode(batch.states[i]) == reference_stack(history, t)
            assert decode(batch.next_states[i]) == reference_stack(history, t + 1)
            assert batch.actions[i] == history[t]["action"]
            assert batch.rewards[i] == history[t]["reward"]
            assert batch.terminals[i] == float(history[t]["terminal"])
    valid = [t for t in range(steps - capacity, steps) if reference_valid(history, capacity, t)]
    assert len(seen) > 0.9 * len(valid)  # uniform sampling reaches nearly every valid index


def test_seeded_sampling_is_reproducible() -> None:
    memory, _ = fill(40, 100, seed=3)
    a = memory.sample(8, np.random.default_rng(5)).states.copy()
    b = memory.sample(8, np.random.default_rng(5)).states.copy()
    assert np.array_equal(a, b)


def test_sampling_an_empty_memory_raises() -> None:
    memory = ReplayStreams(10, H, batch_size=2)
    with pytest.raises(ValueError, match="no transition"):
        memory.sample(2, np.random.default_rng(0))


def test_storage_is_one_frame_per_transition() -> None:
    assert BYTES_PER_TRANSITION <= 7_100
    memory = ReplayMemory(1000, H)
    stored = sum(
        a.nbytes
        for a in (memory.frames, memory.actions, memory.rewards, memory.terminals, memory.starts)
    )
    assert stored == 1000 * BYTES_PER_TRANSITION
    assert 1_000_000 * BYTES_PER_TRANSITION < 7.1e9  # the paper's replay on a 16 GB laptop


def test_a_replay_that_cannot_fit_is_refused_with_the_largest_that_fits() -> None:
    with pytest.raises(UserError, match=r"--replay-size [\d,]+ or less"):
        check_replay_fits(10**9)  # 7 TB, on this machine


class Memory(NamedTuple):
    total: int
    available: int


GIB = 1 << 30


@pytest.mark.parametrize(
    ("machine", "memory", "refused", "warned"),
    [
        # psutil on a 16 GB Mac with a browser open: available = free + inactive pages only
        ("16 GB Mac, busy", Memory(16 * GIB, int(3.9 * GIB)), False, True),
        ("16 GB Mac, idle", Memory(16 * GIB, int(9.5 * GIB)), False, False),
        ("8 GB Mac", Memory(8 * GIB, int(2.6 * GIB)), True, False),
        ("Linux, 23 GB", Memory(int(23.4 * GIB), int(22.6 * GIB)), False, False),
    ],
)
def test_the_default_replay_is_judged_against_the_machine_not_what_is_free_now(
    machine: str, memory: Memory, refused: bool, warned: bool
) -> None:
    """1M transitions (7.06 GB) fit a 16 GB Mac even when little is free right now (a warning,
    not a refusal); an 8 GB Mac is refused with the largest size that fits."""
    if refused:
        with pytest.raises(UserError, match=r"use --replay-size ([\d,]+) or less") as info:
            check_replay_fits(1_000_000, memory)
        largest = int(info.value.args[0].split("use --replay-size ")[1].split()[0].replace(",", ""))
        assert check_replay_fits(largest, Memory(memory.total, memory.total)) is None
        with pytest.raises(UserError):
            check_replay_fits(largest + 1, memory)
        return
    warning = check_replay_fits(1_000_000, memory)
    assert (warning is not None) == warned, machine
    if warned:
        assert warning is not None and "exceeds the memory free right now" in warning


def test_streams_of_several_games_never_mix_them_in_a_stack() -> None:
    """Three games store one transition each per pass (``--num-envs 3``), with episodes of
    different lengths; every sampled stack and next stack holds frames of one game only, in
    that game's order, zero-padded at its own episode starts, with that transition's fields."""
    games, capacity, passes = 3, 3 * 64, 300
    memory = ReplayStreams(capacity, H, batch_size=8, streams=games)
    rng = np.random.default_rng(11)
    histories: list[list[dict]] = [[] for _ in range(games)]
    starts = [True] * games
    for t in range(passes):
        for game in range(games):
            kind = rng.choice(["none", "terminal", "truncated"], p=[0.85, 0.1, 0.05])
            record = {
                "action": int(rng.integers(4)),
                "reward": float(rng.choice([-1, 0, 1])),
                "terminal": kind == "terminal",
                "start": starts[game],
            }
            frame = frame_for(t)
            frame[0, 3] = 1 + game  # which game the frame is from
            memory.add(game, frame, record["action"], record["reward"], record["terminal"],
                       record["start"])  # fmt: skip
            histories[game].append(record)
            starts[game] = kind != "none"
    assert memory.size == capacity and memory.capacity == capacity
    seen_games = set()
    for _ in range(60):
        batch = memory.sample(8, rng)
        for i in range(8):
            owner = {int(f[0, 3]) for f in batch.states[i] if f[0, 2]}
            assert len(owner) == 1  # never two games in one stack
            game = owner.pop() - 1
            assert {int(f[0, 3]) - 1 for f in batch.next_states[i] if f[0, 2]} == {game}
            seen_games.add(game)
            history, t = histories[game], decode(batch.states[i])[-1]
            assert t is not None and reference_valid(history, capacity // games, t)
            assert decode(batch.states[i]) == reference_stack(history, t)
            assert decode(batch.next_states[i]) == reference_stack(history, t + 1)
            assert batch.actions[i] == history[t]["action"]
            assert batch.rewards[i] == history[t]["reward"]
            assert batch.terminals[i] == float(history[t]["terminal"])
    assert seen_games == {0, 1, 2}


@pytest.mark.parametrize("games", [1, 3])
def test_seeded_draws_are_flat_indices_over_the_streams_kept_where_valid(games: int) -> None:
    """The sampler's draws, pinned so that a seed reproduces a run: ``2 * batch`` flat
    indices at a time, uniform over the streams' slots one stream after the other (with one
    game, the slot itself), the first ``batch`` valid ones kept in the order drawn."""
    capacity, steps = 64, 200
    replay = ReplayStreams(games * capacity, H, batch_size=8, streams=games)
    histories = []
    for game in range(games):
        single, history = fill(capacity, steps, seed=9 + game)
        replay.streams[game] = single.streams[0]
        histories.append(history)
    drawn_by = np.random.default_rng(2)
    expected: list[tuple[int, int]] = []
    while len(expected) < 8:
        for flat in drawn_by.integers(0, games * capacity, size=16):
            game, slot = divmod(int(flat), capacity)
            t = steps - capacity + (slot - steps) % capacity  # the transition in that slot
            if reference_valid(histories[game], capacity, t):
                expected.append((game, t))
    batch = replay.sample(8, np.random.default_rng(2))
    for i, (game, t) in enumerate(expected[:8]):
        assert decode(batch.states[i]) == reference_stack(histories[game], t)
        assert batch.actions[i] == histories[game][t]["action"]


def test_several_streams_keep_the_bytes_per_transition() -> None:
    memory = ReplayStreams(1000, H, streams=4)
    stored = sum(
        a.nbytes
        for stream in memory.streams
        for a in (stream.frames, stream.actions, stream.rewards, stream.terminals, stream.starts)
    )
    assert stored == 1000 * BYTES_PER_TRANSITION

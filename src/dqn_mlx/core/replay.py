"""Replay memory that stores each preprocessed frame once (Dopamine-style circular buffer).

Layout: slot ``i`` holds the newest frame of the state s_t the agent acted on, then the
action a_t, the clipped reward r_t, whether the transition is terminal for learning, and
whether frame t is the first frame of an episode. A state is the stack of frames t-3..t and
the next state s_{t+1} is frames t-2..t+1, both rebuilt at sampling time. One transition
costs 7,056 + 7 bytes, so 1,000,000 of them fit in about 7.06 GB (stacked state/next-state
storage would take 56 GB).

Invariants (why an index may or may not be sampled):
1. A stack never reaches across an episode start: frames before the start are zeros, which is
   exactly what the agent saw (``env.StackedFrames`` pads with zeros at a reset too).
2. Transition ``i`` needs frame ``i + 1`` for its next state, so the newest slot is never
   sampled (its successor is the slot about to be overwritten).
3. Once the buffer has wrapped, the oldest ``history - 1`` slots are never sampled: their
   stacks would reach into the newest frames across the write cursor.
4. A transition that ended an episode without being terminal (a time-limit truncation) is
   never sampled: its true next frame was never stored (the next slot starts a new episode),
   and zeroing the bootstrap would teach a wrong value.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np
import psutil

from dqn_mlx.errors import UserError

FRAME_SHAPE = (84, 84)
BYTES_PER_TRANSITION = FRAME_SHAPE[0] * FRAME_SHAPE[1] + 1 + 4 + 1 + 1  # frame, a, r, term, start


class Batch(NamedTuple):
    """A sampled minibatch. Pixel stacks stay uint8 until the network."""

    states: np.ndarray  # (batch, history, 84, 84) uint8
    actions: np.ndarray  # (batch,) int32
    rewards: np.ndarray  # (batch,) float32, clipped
    next_states: np.ndarray  # (batch, history, 84, 84) uint8
    terminals: np.ndarray  # (batch,) float32, 1.0 = do not bootstrap


def replay_bytes(capacity: int) -> int:
    return capacity * BYTES_PER_TRANSITION


MEMORY_RESERVE_BYTES = 3 << 30
"""Physical memory kept for everything but the replay memory: the system, and this process's
own network, optimizer and buffers (the bench's ``peak_memory``, docs/performance.md)."""


class MemoryFigures(Protocol):
    """What ``psutil.virtual_memory()`` reports (bytes)."""

    total: int  # physical memory
    available: int  # free right now without swapping (on macOS: free + inactive pages)


def check_replay_fits(capacity: int, memory: MemoryFigures | None = None) -> str | None:
    """Refuse a replay memory that cannot fit in physical memory less ``MEMORY_RESERVE_BYTES``,
    naming the largest capacity that would, instead of letting the OS kill the run halfway.
    Returns a warning when it fits the machine but not what is free right now (other programs
    will be paged out as the replay fills; macOS counts only free and inactive pages as
    available, so a laptop with a browser open reports little), else None."""
    memory = memory or psutil.virtual_memory()
    usable = memory.total - MEMORY_RESERVE_BYTES
    needed = replay_bytes(capacity)
    if needed > usable:
        largest = max(0, usable // BYTES_PER_TRANSITION)
        raise UserError(
            f"--replay-size {capacity:,} needs {needed / 1e9:.2f} GB but this machine has "
            f"{memory.total / 1e9:.1f} GB of memory ({MEMORY_RESERVE_BYTES / 1e9:.1f} GB kept "
            f"for the rest); use --replay-size {largest:,} or less"
        )
    if needed > memory.available:
        return (
            f"warning: the replay memory ({needed / 1e9:.2f} GB when full) exceeds the memory "
            f"free right now ({memory.available / 1e9:.2f} GB); other programs may be paged "
            "out as it fills"
        )
    return None


class ReplayMemory:
    """One game's circular store of its most recent ``capacity`` transitions (agent steps):
    the frames, fields and stack rules of the module's invariants. ``ReplayStreams`` holds one
    per game and samples from them."""

    def __init__(self, capacity: int, history: int = 4):
        if capacity <= history:
            raise UserError(f"--replay-size must exceed the history length {history}")
        self.capacity, self.history = capacity, history
        # np.zeros maps pages lazily: memory is committed as the buffer fills.
        self.frames = np.zeros((capacity, *FRAME_SHAPE), dtype=np.uint8)
        self.actions = np.zeros(capacity, dtype=np.uint8)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminals = np.zeros(capacity, dtype=np.bool_)
        self.starts = np.zeros(capacity, dtype=np.bool_)
        self.cursor = 0  # next slot to write
        self.size = 0  # slots written so far, at most capacity

    def add(
        self, frame: np.ndarray, action: int, reward: float, terminal: bool, episode_start: bool
    ) -> None:
        """Store transition t: the newest frame of s_t, a_t, clipped r_t, terminal flag, and
        whether frame t is the first of its episode."""
        i = self.cursor
        self.frames[i] = frame
        self.actions[i] = action
        self.rewards[i] = reward
        self.terminals[i] = terminal
        self.starts[i] = episode_start
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def is_valid(self, index: np.ndarray) -> np.ndarray:
        """Which slot indices may be sampled (see the module's invariants 2-4)."""
        index = np.asarray(index)
        newest = (self.cursor - 1) % self.capacity
        valid = (index < self.size) & (index != newest)
        if self.size == self.capacity:  # invariant 3: the oldest history-1 slots
            age = (index - self.cursor) % self.capacity
            valid &= age >= self.history - 1
        following = (index + 1) % self.capacity
        valid &= self.terminals[index] | ~self.starts[following]  # invariant 4
        return valid

    def stack_indices(self, newest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slot indices (n, history) of the stacks ending at ``newest``, and a mask of the
        positions that lie inside the newest frame's episode (the others are zeroed)."""
        offsets = np.arange(-self.history + 1, 1)
        idx = (newest[:, None] + offsets) % self.capacity  # (n, history), oldest first
        starts = self.starts[idx]
        # Position p is cut off if an episode starts at any later position p+1..newest.
        later_start = np.logical_or.accumulate(starts[:, :0:-1], axis=1)[:, ::-1]
        keep = np.ones_like(starts)
        keep[:, :-1] = ~later_start
        return idx, keep

    def gather_stacks(self, newest: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Stacks (n, history, 84, 84) uint8 ending at the given slots, zero-padded at starts;
        written into ``out`` when it has n rows."""
        idx, keep = self.stack_indices(newest)
        if out is None or out.shape[0] != len(newest):
            out = np.empty((len(newest), self.history, *FRAME_SHAPE), np.uint8)
        np.take(self.frames, idx, axis=0, out=out)
        out[~keep] = 0
        return out


class ReplayStreams:
    """The replay memory D of ``--num-envs N`` games played at once: one ``ReplayMemory``
    stream per game, each of ``capacity // N`` transitions, so that a rebuilt stack never
    mixes two games (each stream keeps the invariants above on its own). Bytes per transition
    are those of one stream.

    Sampling is uniform over every stored transition of every stream: a flat index over the
    streams' filled slots, one after the other, is drawn and rejected where the slot is not
    valid. With one stream (the papers' replay) the flat index is the slot itself."""

    def __init__(self, capacity: int, history: int = 4, batch_size: int = 32, streams: int = 1):
        if capacity // streams <= history:
            raise UserError(
                f"--replay-size {capacity:,} split over {streams} games leaves "
                f"{capacity // streams:,} transitions per game; it must exceed the history "
                f"length {history}"
            )
        self.streams = [ReplayMemory(capacity // streams, history) for _ in range(streams)]
        self.capacity = capacity // streams * streams
        self.history = history
        # Gather buffers reused by every minibatch of ``batch_size``: fresh ones would fault
        # in their pages again at each sample.
        shape = (batch_size, history, *FRAME_SHAPE)
        self._buffers = (np.empty(shape, np.uint8), np.empty(shape, np.uint8))

    @property
    def size(self) -> int:
        return sum(stream.size for stream in self.streams)

    def add(
        self,
        game: int,
        frame: np.ndarray,
        action: int,
        reward: float,
        terminal: bool,
        episode_start: bool,
    ) -> None:
        """Store transition t of game ``game`` in its stream (``ReplayMemory.add``)."""
        self.streams[game].add(frame, action, reward, terminal, episode_start)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """A minibatch of ``batch_size`` transitions drawn uniformly from the valid ones.

        The stacks are written into buffers reused by the next call: copy them (``mx.array``
        does) before sampling again."""
        games, slots = self._draw_valid(batch_size, rng)
        use_buffers = batch_size == self._buffers[0].shape[0]
        states = self._gather(games, slots, self._buffers[0] if use_buffers else None)
        following = (slots + 1) % self.streams[0].capacity
        next_states = self._gather(games, following, self._buffers[1] if use_buffers else None)
        actions = np.empty(batch_size, np.int32)
        rewards = np.empty(batch_size, np.float32)
        terminals = np.empty(batch_size, np.float32)
        for k, stream in enumerate(self.streams):
            here = games == k
            actions[here] = stream.actions[slots[here]]
            rewards[here] = stream.rewards[slots[here]]
            terminals[here] = stream.terminals[slots[here]]
        return Batch(states, actions, rewards, next_states, terminals)

    def _draw_valid(
        self, batch_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(stream, slot) of ``batch_size`` valid transitions, uniform over all stored ones:
        rejection sampling, ``2 * batch_size`` flat indices a draw (rejections are rare)."""
        sizes = np.array([stream.size for stream in self.streams])
        offsets = np.cumsum(sizes) - sizes
        games, slots = np.empty(0, np.int64), np.empty(0, np.int64)
        for _attempt in range(1000):
            drawn = rng.integers(0, max(int(sizes.sum()), 1), size=2 * batch_size)
            game = np.searchsorted(offsets, drawn, side="right") - 1
            slot = drawn - offsets[game]
            valid = np.zeros(len(drawn), dtype=np.bool_)
            for k, stream in enumerate(self.streams):
                here = game == k
                valid[here] = stream.is_valid(slot[here])
            games = np.concatenate([games, game[valid]])
            slots = np.concatenate([slots, slot[valid]])
            if len(games) >= batch_size:
                return games[:batch_size], slots[:batch_size]
        raise ValueError("the replay memory holds no transition that can be sampled yet")

    def _gather(self, games: np.ndarray, slots: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """The stacks ending at slot ``slots[i]`` of stream ``games[i]``, into ``out`` where
        given. A batch from one stream (always, with one game) is gathered in place."""
        if out is None:
            out = np.empty((len(slots), self.history, *FRAME_SHAPE), np.uint8)
        for k, stream in enumerate(self.streams):
            here = games == k
            if here.all():
                return stream.gather_stacks(slots, out)
            if here.any():
                out[here] = stream.gather_stacks(slots[here])
        return out

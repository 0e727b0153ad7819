"""Preprocessing on a real ALE game: what the agent sees is what the papers describe."""

from __future__ import annotations

import numpy as np
import pytest
from ale_py.vector_env import AtariVectorEnv

from dqn_mlx.core.env import (
    AtariEnv,
    StackedFrames,
    comparability_note,
    make_atari_env,
    resolve_game,
)
from dqn_mlx.errors import UserError


def breakout(seed: int = 0, noop_max: int = 30) -> object:
    return make_atari_env("BreakoutNoFrameskip-v4", 4, noop_max, 108_000, seed)


def test_frames_are_84x84_uint8_grayscale_with_a_visible_game() -> None:
    env = breakout()
    frame = env.reset()
    assert frame.shape == (84, 84) and frame.dtype == np.uint8
    frames = [env.step(a).frame for a in [1, 2, 2, 3, 0] * 10]
    stacked = np.stack(frames)
    assert stacked.max() > 100 and stacked.min() == 0  # walls/bricks bright, background dark
    assert len({f.tobytes() for f in frames}) > 5  # the ball and paddle move


def test_frames_are_the_max_of_the_last_two_raw_frames() -> None:
    """Same seed and actions, with and without max-pooling: pooling can only brighten, and it
    must differ somewhere (the ball moves between the two raw frames)."""
    kwargs = dict(
        stack_num=1,
        frameskip=4,
        noop_max=0,
        reward_clipping=False,
        autoreset_mode="SameStep",
        repeat_action_probability=0.0,
    )
    pooled = AtariVectorEnv("breakout", 1, maxpool=True, **kwargs)
    plain = AtariVectorEnv("breakout", 1, maxpool=False, **kwargs)
    ours = breakout(seed=0, noop_max=0)
    a, b, c = pooled.reset(seed=0)[0], plain.reset(seed=0)[0], ours.reset()
    assert np.array_equal(a[0, 0], c)
    differs = 0
    for action in [1, 2, 2, 2, 3, 3, 0, 0] * 5:
        a = pooled.step(np.array([action]))[0][0, 0]
        b = plain.step(np.array([action]))[0][0, 0]
        step = ours.step(action)
        if step.life_lost:  # from here ours also presses FIRE: the streams part
            break
        assert np.array_equal(a, step.frame)
        assert np.all(a >= b)
        differs += int(np.any(a > b))
    assert differs > 0


def test_noop_starts_vary_the_first_frame_number() -> None:
    starts = set()
    for seed in range(8):
        env = breakout(seed=seed, noop_max=30)
        env.reset()
        starts.add(env.reset_frame_number)
    assert len(starts) > 3 and max(starts) <= 4 * 30 + 4 * 2
    env = breakout(seed=0, noop_max=0)
    env.reset()
    assert env.reset_frame_number <= 4 * 2  # only the FIRE press after the reset


def _frames(env: object, actions: list[int]) -> list[np.ndarray]:
    return [env.step(a).frame.copy() for a in actions]  # type: ignore[attr-defined]


def test_a_prepared_reset_starts_the_same_game_as_a_plain_one() -> None:
    actions = [int(a) for a in np.random.default_rng(0).integers(4, size=150)]
    plain = breakout(seed=0)
    expected = [plain.reset(123).copy(), *_frames(plain, actions)]
    env = breakout(seed=0)
    env.reset(7)
    env.prepare_reset(123)  # loads on the spare emulator while this game goes on
    _frames(env, actions[:50])
    got = [env.reset(123).copy(), *_frames(env, actions)]
    assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
    env.prepare_reset(5)  # a prepared game that is not asked for is not used
    assert np.array_equal(env.reset(123), expected[0])
    env.close()


def test_replaying_the_actions_since_a_seeded_start_repeats_games_across_resets() -> None:
    """Games after ale-py's automatic reset follow from the last seeded start and the actions
    since (what resume replays), even in Seaquest, which keeps emulator state across resets.
    Short games (400 emulator frames) put several resets in 400 agent steps."""

    def seaquest() -> object:
        return make_atari_env("SeaquestNoFrameskip-v4", 4, 30, 400, seed=0)

    actions = [int(a) for a in np.random.default_rng(1).integers(18, size=400)]
    first, again = seaquest(), seaquest()
    first.reset(99)  # type: ignore[attr-defined]
    steps = [first.step(a) for a in actions]  # type: ignore[attr-defined]
    assert sum(s.game_over or s.truncated for s in steps) >= 3
    again.reset(99)  # type: ignore[attr-defined]
    replayed = _frames(again, actions)
    assert all(np.array_equal(s.frame, f) for s, f in zip(steps, replayed, strict=True))


def test_fire_is_pressed_after_reset_and_after_each_lost_life() -> None:
    """An agent that only ever plays NOOP still loses all five lives in Breakout: the ball is
    launched after the reset and after every lost life."""
    env = breakout(seed=1)
    env.reset()
    lives_lost = 0
    for _ in range(5_000):
        step = env.step(0)
        lives_lost += step.life_lost
        if step.game_over:
            break
    assert step.game_over and lives_lost == 5
    assert step.frame.shape == (84, 84)  # the first frame of the next game


def test_without_fire_after_a_lost_life_a_noop_agent_stalls_as_in_deepminds_code() -> None:
    """``fire_after_life_loss=False``: only the reset launches the ball, so an agent that only
    plays NOOP loses one life and then waits, and the game never ends."""
    game = resolve_game("BreakoutNoFrameskip-v4")
    env = AtariEnv(game, 4, 30, 108_000, seed=1, fire_after_life_loss=False)
    env.reset()
    steps = [env.step(0) for _ in range(2_000)]
    assert sum(step.life_lost for step in steps) == 1
    assert not any(step.game_over or step.truncated for step in steps)


def test_our_stacks_equal_ale_pys_stacking_with_zero_padding_at_reset() -> None:
    reference = AtariVectorEnv(
        "breakout",
        1,
        stack_num=4,
        frameskip=4,
        noop_max=0,
        reward_clipping=False,
        autoreset_mode="SameStep",
    )
    ours = breakout(seed=3, noop_max=0)
    stack = StackedFrames(4)
    expected = reference.reset(seed=3)[0][0]
    state = stack.reset(ours.reset())
    assert np.array_equal(state, expected) and not state[:3].any()
    for action in [1, 2, 3, 0, 2, 2, 3]:
        expected = reference.step(np.array([action]))[0][0]
        state = stack.push(ours.step(action).frame)
        assert np.array_equal(state, expected)


def test_v5_ids_have_sticky_actions_and_say_so() -> None:
    game = resolve_game("ALE/Pong-v5")
    assert game.rom == "pong" and game.sticky_actions == 0.25 and game.fixed_frame_skip == 4
    assert "not comparable" in (comparability_note(game) or "")
    assert comparability_note(resolve_game("PongNoFrameskip-v4")) is None


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("BreakoutNoFrameskp-v4", "did you mean BreakoutNoFrameskip-v4"),
        ("CartPole-v1", "not an Atari game"),
        ("Breakout-v4", "its own frame skipping; use BreakoutNoFrameskip-v4"),
    ],
)
def test_bad_env_ids_are_explained(env_id: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        resolve_game(env_id)


def test_the_colour_twin_plays_the_agents_game_through_resets_and_lost_lives() -> None:
    """The twin emulator gets the same seeds and actions, so it stays in the agent's game: the
    env checks every step's reward, end and lives against it and raises if they part."""
    env = make_atari_env("BreakoutNoFrameskip-v4", 4, 30, 108_000, seed=3, colour_frames=True)
    rng = np.random.default_rng(0)
    env.reset(seed=3)
    assert env.colour_frame is not None and env.colour_frame.shape == (210, 160, 3)
    games, screens = 0, set()
    while games < 2:
        step = env.step(int(rng.integers(env.num_actions)))
        screens.add(env.colour_frame.tobytes())
        if step.game_over or step.truncated:
            games += 1
            env.reset(seed=int(rng.integers(1000)))
    env.close()
    assert len(screens) > 100  # it moved with the game

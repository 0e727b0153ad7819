"""The presets carry the papers' numbers (shared/reference/dqn-paper.md)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dqn_mlx.config import (
    DEFAULT_PRESET,
    LAPTOP,
    NATURE2015,
    NIPS2013,
    PRESETS,
    parse_assignments,
    preset,
    with_overrides,
)
from dqn_mlx.core.network import ARCHITECTURES
from dqn_mlx.errors import UserError
from dqn_mlx.run.checkpoint import config_from_json


def test_nips2013_preset_matches_the_2013_paper() -> None:
    c = NIPS2013
    assert c is PRESETS["nips2013"] and c.preset == "nips2013"
    assert ARCHITECTURES[c.network] == (((16, 8, 4), (32, 4, 2)), 256)
    assert (c.frame_skip, c.frame_skip_for("space_invaders"), c.frame_skip_for("breakout")) == (
        4,
        3,
        4,
    )
    assert (c.batch_size, c.replay_size, c.history_length) == (32, 1_000_000, 4)
    assert (c.epsilon_start, c.epsilon_end, c.epsilon_decay_steps) == (1.0, 0.1, 1_000_000)
    assert c.update_period == 1 and c.target_update_agent_steps == 0  # Algorithm 1, no target
    assert (c.optimizer, c.loss_reduction) == ("centered_rmsprop", "sum")
    assert c.epoch_updates == 50_000 and c.eval_steps == 10_000 and c.eval_epsilon == 0.05
    assert c.total_steps == 10_000_000 and c.loss == "squared" and c.reward_clip == 1.0
    assert not c.terminal_on_life_loss


def test_nature2015_preset_matches_the_nature_paper() -> None:
    c = NATURE2015
    assert ARCHITECTURES[c.network] == (((32, 8, 4), (64, 4, 2), (64, 3, 1)), 512)
    assert c.frame_skip_for("space_invaders") == 4
    assert (c.learning_rate, c.rms_grad_decay, c.rms_sq_decay, c.rms_min_sq) == (
        2.5e-4,
        0.95,
        0.95,
        0.01,
    )
    # DeepMind's code counts the sync in agent steps: 10,000 agent steps = 2,500 updates.
    assert (c.target_update_agent_steps, c.update_period, c.learning_starts) == (10_000, 4, 50_000)
    assert (c.optimizer, c.loss_reduction) == ("centered_rmsprop", "sum")
    assert (c.gamma, c.noop_max, c.total_steps, c.loss) == (0.99, 30, 50_000_000, "huber")
    assert c.terminal_on_life_loss and c.replay_size == 1_000_000


def test_laptop_preset_is_cleanrls_dqn_atari_and_the_default() -> None:
    c = LAPTOP
    assert DEFAULT_PRESET == "laptop" and PRESETS["laptop"] is c and c.preset == "laptop"
    assert c.network == "nature2015" and c.terminal_on_life_loss and c.frame_skip_for("x") == 4
    assert (c.optimizer, c.learning_rate, c.adam_eps) == ("adam", 1e-4, 1e-8)
    assert (c.loss, c.loss_reduction) == ("squared", "mean")
    assert (c.update_period, c.target_update_agent_steps, c.batch_size) == (4, 1_000, 32)
    assert (c.learning_starts, c.replay_size, c.gamma) == (80_000, 1_000_000, 0.99)
    assert (c.epsilon_start, c.epsilon_end, c.epsilon_decay_steps) == (1.0, 0.01, 1_000_000)
    assert c.total_steps == 10_000_000
    c.validate()


def test_old_checkpoints_target_period_in_updates_becomes_agent_steps() -> None:
    old = dataclasses.asdict(NATURE2015)
    del old["target_update_agent_steps"]
    old["target_update_period"] = 10_000  # updates, as saved before the sync counted actions
    assert config_from_json(json.dumps(old)).target_update_agent_steps == 40_000


def test_overrides_convert_types_and_reject_bad_values() -> None:
    c = with_overrides(
        NIPS2013,
        parse_assignments(["gamma=0.9", "replay-size=1_000", "terminal_on_life_loss=true"]),
    )
    assert (c.gamma, c.replay_size, c.terminal_on_life_loss) == (0.9, 1000, True)
    with pytest.raises(UserError, match="unknown hyperparameter"):
        with_overrides(NIPS2013, {"gama": "0.9"})
    with pytest.raises(UserError, match="not a valid int"):
        with_overrides(NIPS2013, {"batch_size": "many"})
    with pytest.raises(UserError, match="choose one of"):
        with_overrides(NIPS2013, {"loss": "l1"})
    with pytest.raises(UserError, match="unknown preset"):
        preset("nature2016")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("total_steps", 0, r"--steps must be in \[1, 100,000,000,000\], got 0"),
        ("total_steps", 10**13, r"--steps must be in \[1, 100,000,000,000\], got 10000000000000"),
        ("replay_size", -5, "--replay-size must be >= 1"),
        ("replay_size", 10, "must exceed --batch-size"),
        ("learning_starts", 10**9, "must be below --steps"),
        ("gamma", 1.5, r"--set gamma=\.\.\. must be in \[0, 1\]"),
        ("epoch_updates", 20_000_000, "--epoch-updates .* is longer than the whole run"),
        ("learning_starts", 0, "--learning-starts 0 is below --num-envs 1"),
        ("num_envs", 0, "--num-envs must be >= 1"),
        (
            "num_envs",
            3,
            "--steps 10,000,000 is not a multiple of --num-envs 3 .* use --steps 9,999,999",
        ),
        ("num_envs", 200_000, "--replay-size 1,000,000 split over --num-envs 200000 games"),
    ],
)
def test_validate_names_the_bad_flag(field: str, value: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        dataclasses.replace(NIPS2013, **{field: value}).validate()


def test_a_pass_of_several_games_fits_in_an_epoch_and_after_the_first_transitions() -> None:
    four = dataclasses.replace(NIPS2013, num_envs=4)  # update period 1: 4 updates per pass
    with pytest.raises(UserError, match=r"--epoch-updates 3 is shorter than one pass .*4 updates"):
        dataclasses.replace(four, epoch_updates=3).validate()
    with pytest.raises(UserError, match="--learning-starts 3 is below --num-envs 4"):
        dataclasses.replace(four, learning_starts=3).validate()
    dataclasses.replace(four, epoch_updates=4, learning_starts=4).validate()


# --- every numeric field is checked: finite and in its range -------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dqn_mlx.config import RANGES, flag_of  # noqa: E402

FLOAT_FIELDS = [n for n in RANGES if isinstance(getattr(LAPTOP, n), float)]
INT_FIELDS = [n for n in RANGES if n not in FLOAT_FIELDS]


def test_every_numeric_field_has_a_range() -> None:
    numeric = {
        f.name
        for f in dataclasses.fields(LAPTOP)
        if isinstance(getattr(LAPTOP, f.name), int | float)
        and not isinstance(getattr(LAPTOP, f.name), bool)
    }
    assert numeric == set(RANGES)


def _outside(name: str) -> st.SearchStrategy[float]:
    allowed = RANGES[name]
    below = st.floats(max_value=allowed.low, exclude_max=not allowed.open_low)
    above = (
        st.floats(min_value=allowed.high, exclude_min=not allowed.open_high)
        if allowed.high != float("inf")
        else st.nothing()
    )
    special = st.sampled_from([float("nan"), float("inf"), float("-inf")])
    if name in INT_FIELDS:
        return st.one_of(
            st.integers(max_value=int(allowed.low) - 1),
            st.integers(min_value=int(allowed.high) + 1)
            if allowed.high != float("inf")
            else st.nothing(),
        )
    return st.one_of(below, above, special)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_value_out_of_its_range_is_refused_naming_the_flag_and_the_range(
    data: st.DataObject,
) -> None:
    name = data.draw(st.sampled_from(sorted(RANGES)))
    value = data.draw(_outside(name))
    config = dataclasses.replace(LAPTOP, **{name: value})
    with pytest.raises(UserError) as refused:
        config.validate()
    assert flag_of(name) in str(refused.value) and str(RANGES[name]) in str(refused.value)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_value_in_its_range_passes_the_range_check(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(RANGES)))
    allowed = RANGES[name]
    high = allowed.high if allowed.high != float("inf") else 1e12
    if name in INT_FIELDS:
        value: float = data.draw(st.integers(int(allowed.low), int(min(high, 2**40))))
    else:
        value = data.draw(
            st.floats(
                allowed.low, high, exclude_min=allowed.open_low, exclude_max=allowed.open_high
            )
        )
    config = dataclasses.replace(LAPTOP, **{name: value})
    try:
        config.validate()
    except UserError as exc:  # only a check across fields may refuse it
        assert str(allowed) not in str(exc), exc


@pytest.mark.parametrize(
    ("assignment", "flag"),
    [
        ("learning_rate=nan", "--learning-rate"),
        ("learning_rate=inf", "--learning-rate"),
        ("reward_clip=-1", "--set reward_clip=..."),
        ("gamma=1.5", "--set gamma=..."),
        ("seed=-1", "--seed"),
        ("rms_min_sq=0", "--set rms_min_sq=..."),
    ],
)
def test_set_values_out_of_range_are_refused(assignment: str, flag: str) -> None:
    with pytest.raises(UserError, match=flag.replace(".", r"\.")):
        with_overrides(LAPTOP, parse_assignments([assignment])).validate()


def test_the_preset_is_not_set_with_set() -> None:
    with pytest.raises(UserError, match="--preset"):
        parse_assignments(["preset=nature2015"])

"""Every hyperparameter in one frozen, typed config, with named presets (the papers', laptop).

Units: an *agent step* is one action chosen by the agent, one stored transition, and
``frame_skip`` emulator frames. The papers' "frames" (replay size, epsilon schedule, replay
start, training length) are agent steps. An *update* is one minibatch gradient step.

Sources (the papers, and the README's presets table):
- ``nips2013``: Mnih et al. 2013, "Playing Atari with Deep Reinforcement Learning", Sec. 4-5.
- ``nature2015``: Mnih et al. 2015, "Human-level control ...", Methods and Extended Data Table 1,
  with the target sync counted as DeepMind's released code counts it (google-deepmind/dqn).
- ``laptop``: CleanRL's ``dqn_atari.py`` defaults (Huang et al. 2022): Adam, mean squared TD
  error, target sync every 1,000 agent steps, epsilon 1 -> 0.01.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import math
import typing
from dataclasses import dataclass
from typing import Annotated, Literal, TypeVar

from dqn_mlx.core.schedule import Schedule
from dqn_mlx.errors import UserError

Architecture = Literal["nips2013", "nature2015"]
LossKind = Literal["squared", "huber"]
LossReduction = Literal["sum", "mean"]
OptimizerKind = Literal["centered_rmsprop", "adam"]
T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """The values a numeric field may take: ``low`` to ``high``, each bound included unless
    ``open_low`` / ``open_high``; always finite."""

    low: float
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        def number(x: float) -> str:
            return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"

        if self.high == math.inf:
            return f"{'>' if self.open_low else '>='} {number(self.low)} (and finite)"
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        return f"in {left}{number(self.low)}, {number(self.high)}{right}"


# The ranges of the fields' types (``DQNConfig.validate`` checks them, ``RANGES`` lists them).
MAX_TOTAL_STEPS = 100_000_000_000
"""The most agent steps a run may be given: about 16 years at 200 agent steps/s, and beyond the
longest Atari trainings published (tens of billions of emulator frames). A larger ``--steps``
is a slip, refused as such rather than for the disk its checkpoints would fill."""
AtLeast1 = Annotated[int, Range(1)]
AtLeast0 = Annotated[int, Range(0)]
Positive = Annotated[float, Range(0, open_low=True)]
Probability = Annotated[float, Range(0, 1)]
Decay = Annotated[float, Range(0, 1, open_high=True)]


@dataclass(frozen=True)
class Flag:
    """How a field's flag shows on the command line beyond its name, type, range and docstring:
    the ``--help`` panel that lists it, its name where it is not the field's, and the unit its
    default is shown in. A field without one is listed under ``HYPERPARAMETERS`` and named in
    messages both by its flag and by ``--set name=...``."""

    panel: str
    name: str | None = None
    unit: str = ""


GENERAL, TRAIN, HYPERPARAMETERS = "General", "Train", "Hyperparameters (or --set name=value)"
RUN = Flag(TRAIN)


@dataclass(frozen=True)
class DQNConfig:
    """Hyperparameters of one DQN run. Field docstrings give the unit and the source; each
    field's annotation its range (``Range``) and, for the run's own counts, its ``--help``
    panel (``Flag``). Every field is a flag of ``--mode train`` (``flags.py``), so a new one
    needs no other edit to be set from the command line."""

    preset: str = "nips2013"
    """Name of the preset these values started from (recorded in checkpoints)."""

    # --- network -------------------------------------------------------------------------
    network: Architecture = "nips2013"
    """Q-network shape: ``nips2013`` = conv 16 8x8/4, conv 32 4x4/2, fc 256 (2013 Sec. 4.1);
    ``nature2015`` = conv 32 8x8/4, conv 64 4x4/2, conv 64 3x3/1, fc 512 (2015 Methods)."""

    # --- environment and preprocessing ------------------------------------------------------
    frame_skip: AtLeast1 = 4
    """Emulator frames per agent step; the action repeats on the skipped frames (both papers)."""
    frame_skip_overrides: tuple[tuple[str, int], ...] = (("space_invaders", 3),)
    """Per-game frame skip, by ALE ROM name: 3 for Space Invaders in 2013 (lasers blink at 4)."""
    history_length: AtLeast1 = 4
    """Preprocessed 84x84 frames stacked into one network input (both papers)."""
    noop_max: AtLeast0 = 30
    """No-op starts (2015 Methods: "up to 30 no-op actions"): every game starts after a number
    of no-op *emulator frames* drawn uniformly from 0..noop_max-1 by ale-py's vector env (not
    no-op agent steps of frame_skip frames each)."""
    fire_after_life_loss: bool = True
    """Press FIRE after a lost life (training and evaluation) in games whose second action is
    FIRE, as ale-py presses it after a reset. A deviation from DeepMind's code, which presses
    nothing: its agent must learn to relaunch, and can otherwise stall until the episode's
    frame cap (Breakout). On by default in every preset, as in common Atari wrappers."""
    terminal_on_life_loss: bool = False
    """Whether a lost life ends the *training* episode for the TD target (2015 Methods).
    Evaluation always plays full games."""
    max_episode_frames: AtLeast1 = 108_000
    """Cap on one training episode, in emulator frames (30 minutes at 60 Hz, ALE's default)."""
    reward_clip: Positive = 1.0
    """Rewards used for learning are clipped to [-reward_clip, reward_clip] (both papers).
    Reported scores are always the raw game score."""

    # --- replay memory ------------------------------------------------------------------------
    replay_size: Annotated[AtLeast1, Flag(TRAIN, unit="transitions")] = 1_000_000
    """Transitions (agent steps) kept in the replay memory (both papers: 1M)."""
    learning_starts: Annotated[AtLeast0, RUN] = 50_000
    """Agent steps of uniform-random play before the first update (2015: replay start 50k;
    the 2013 paper gives none, so the Nature value is used)."""

    # --- learner ------------------------------------------------------------------------------
    batch_size: Annotated[AtLeast1, RUN] = 32
    """Transitions per minibatch update (both papers)."""
    gamma: Probability = 0.99
    """Discount factor in the TD target y = r + gamma * max_a' Q(s', a') (2015 Table 1)."""
    loss: LossKind = "squared"
    """``squared``: 1/2 (y - Q)^2, whose gradient is the TD error itself, as in DeepMind's
    update (2013 Eq. 2 up to the constant); ``huber``: its quadratic part up to |y - Q| = 1,
    linear beyond, so the gradient is the TD error clipped to [-1, 1] (2015 Methods)."""
    loss_reduction: LossReduction = "sum"
    """How the per-sample losses of a minibatch combine: ``sum`` accumulates each sample's
    gradient, as DeepMind's code does (``NeuralQLearner.lua``); ``mean`` is CleanRL's
    ``F.mse_loss``."""
    optimizer: OptimizerKind = "centered_rmsprop"
    """``centered_rmsprop``: DeepMind's RMSProp (2015 Table 1); ``adam``: Adam (Kingma & Ba),
    the optimizer of CleanRL's dqn_atari and Dopamine's JAX DQN."""
    learning_rate: Annotated[Positive, RUN] = 2.5e-4
    """Optimizer step size (2015 Table 1; the 2013 paper gives no constants)."""
    rms_grad_decay: Decay = 0.95
    """Centered RMSProp's gradient momentum (2015 Table 1)."""
    rms_sq_decay: Decay = 0.95
    """Centered RMSProp's squared-gradient momentum (2015 Table 1)."""
    rms_min_sq: Positive = 0.01
    """Centered RMSProp's min squared gradient, added under the square root (2015 Table 1)."""
    adam_eps: Positive = 1e-8
    """Adam's epsilon (PyTorch's default, which CleanRL's dqn_atari uses)."""
    update_period: Annotated[AtLeast1, RUN] = 1
    """Agent steps per update: 1 in 2013 (Algorithm 1), 4 in 2015 ("update frequency")."""
    target_update_agent_steps: Annotated[AtLeast0, RUN] = 0
    """Agent steps between target-network syncs theta^- <- theta. 0 = no separate target
    network: the target uses the parameters of the previous iteration, theta_{i-1}, as in
    2013. Counted in agent steps as DeepMind's code does (``target_q = 10000``, synced when
    ``numSteps % target_q == 1``, ``numSteps`` counting actions), which makes the 2015 setting
    a sync every 2,500 updates; Extended Data Table 1's wording says "parameter updates", but
    the published scores come from the code."""
    # --- exploration --------------------------------------------------------------------------
    epsilon_start: Probability = 1.0
    """Exploration rate where the anneal begins, at agent step ``learning_starts``; the random
    replay start before it plays at epsilon 1 (both papers; ``core.policy.exploration_rate``)."""
    epsilon_end: Probability = 0.1
    """Exploration rate after the anneal (both papers)."""
    epsilon_decay_steps: Annotated[AtLeast0, RUN] = 1_000_000
    """Agent steps over which epsilon falls linearly from start to end (both papers: 1M)."""

    # --- schedule and evaluation -----------------------------------------------------------
    total_steps: Annotated[int, Range(1, MAX_TOTAL_STEPS), Flag(TRAIN, name="steps")] = 10_000_000
    """Agent steps of training (2013: 10M; 2015: 50M); in ``--mode bench``, of the training loop
    it times (default there 2,000)."""
    epoch_updates: Annotated[AtLeast1, RUN] = 50_000
    """Updates per epoch; one checkpoint, evaluation and plot point per epoch (2013 Sec. 5.1)."""
    eval_steps: Annotated[AtLeast1, RUN] = 10_000
    """Agent steps of epsilon=eval_epsilon play per epoch evaluation (2013 Sec. 5.1); in
    ``--mode eval``, the length of ``--protocol nips2013``, and only with it."""
    eval_epsilon: Probability = 0.05
    """Exploration rate during evaluation (both papers)."""
    held_out_states: Annotated[AtLeast1, RUN] = 1_000
    """States collected by a random policy before training, on which the average max-Q is
    tracked each epoch (2013 Sec. 5.1; the paper does not give the count)."""
    seed: Annotated[int, Range(0, 2**32 - 1), Flag(GENERAL)] = 0  # numpy's, MLX's: unsigned
    """Seeds numpy, MLX and the emulators: the same seed reproduces a CPU run. In ``--mode
    eval``, the games' seed (default there: the checkpoint's seed + 1000)."""
    num_envs: Annotated[AtLeast1, RUN] = 1
    """Games played at once (``--num-envs``); 1 in both papers. Each agent step of each game
    counts as one agent step everywhere (epsilon, updates, target syncs, ``total_steps``),
    and each game stores its transitions in its own replay stream of ``replay_size //
    num_envs`` transitions, so the replay ratio is that of one game (core/loop.py)."""

    def frame_skip_for(self, game: str) -> int:
        """Emulator frames per agent step for one ALE ROM name."""
        return dict(self.frame_skip_overrides).get(game, self.frame_skip)

    def validate(self) -> DQNConfig:
        """Raise UserError naming the first value out of its range (``RANGES``: every numeric
        field, NaN and infinities refused) or inconsistent with another; return self when all
        is well."""
        hints = typing.get_type_hints(DQNConfig)
        for name, allowed in RANGES.items():
            value = getattr(self, name)
            numeric = (int, float) if hints[name] is float else int
            if isinstance(value, bool) or not isinstance(value, numeric):
                raise UserError(f"{flag_of(name)} must be a number, got {value!r}")
            if not allowed.holds(value):
                raise UserError(f"{flag_of(name)} must be {allowed}, got {value!r}")
        for name, hint in hints.items():
            choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
            if (choices and getattr(self, name) not in choices) or (
                hint is bool and not isinstance(getattr(self, name), bool)
            ):
                valid = ", ".join(map(str, choices or (True, False)))
                raise UserError(
                    f"{flag_of(name)} must be one of {valid}, got {getattr(self, name)!r}"
                )
        if any(skip < 1 for _, skip in self.frame_skip_overrides):
            raise UserError(
                f"frame_skip_overrides must be positive, got {self.frame_skip_overrides}"
            )
        if self.replay_size < self.batch_size + self.history_length:
            raise UserError(
                f"--replay-size ({self.replay_size}) must exceed --batch-size "
                f"({self.batch_size}) + history; raise --replay-size"
            )
        self._validate_games()
        if self.learning_starts >= self.total_steps:
            raise UserError(
                f"--learning-starts ({self.learning_starts}) must be below --steps "
                f"({self.total_steps}) or the agent never learns"
            )
        planned = Schedule.of(self).updates_by(self.total_steps)
        if self.epoch_updates > planned:
            raise UserError(
                f"--epoch-updates ({self.epoch_updates:,}) is longer than the whole run "
                f"({planned:,} updates with these --steps, --learning-starts and update "
                "period); lower --epoch-updates or raise --steps"
            )
        return self

    def _validate_games(self) -> None:
        """``num_envs`` games play one agent step each per pass of the loop, and split the
        replay memory between them."""
        if self.total_steps % self.num_envs:
            lower = self.total_steps // self.num_envs * self.num_envs
            raise UserError(
                f"--steps {self.total_steps:,} is not a multiple of --num-envs {self.num_envs} "
                f"(each pass plays one agent step in every game); use --steps {lower:,} or "
                f"{lower + self.num_envs:,}"
            )
        if self.replay_size // self.num_envs < self.batch_size + self.history_length:
            raise UserError(
                f"--replay-size {self.replay_size:,} split over --num-envs {self.num_envs} "
                f"games is too small; raise --replay-size or lower --num-envs"
            )
        if self.learning_starts < self.num_envs:
            raise UserError(
                f"--learning-starts {self.learning_starts:,} is below --num-envs "
                f"{self.num_envs}: the first update would come before any stored transition "
                f"can be sampled; use --learning-starts {self.num_envs} or more"
            )
        updates_per_pass = Schedule.of(self).most_updates_per_pass()
        if self.epoch_updates < updates_per_pass:
            raise UserError(
                f"--epoch-updates {self.epoch_updates:,} is shorter than one pass of the loop "
                f"({updates_per_pass} updates with --num-envs {self.num_envs}); use "
                f"--epoch-updates {updates_per_pass} or more"
            )


def _metadata(kind: type[T]) -> dict[str, T]:
    """The fields' annotations of class ``kind`` (``Range``, ``Flag``), by field name."""
    hints = typing.get_type_hints(DQNConfig, include_extras=True)
    return {
        name: extra
        for name, hint in hints.items()
        for extra in getattr(hint, "__metadata__", ())
        if isinstance(extra, kind)
    }


RANGES: dict[str, Range] = _metadata(Range)
"""Every numeric field of ``DQNConfig`` and the values it may take (from its annotation)."""
FLAGS: dict[str, Flag] = _metadata(Flag)


def flag_fields() -> list[str]:
    """The fields that are flags of ``--mode train``: every one but ``preset`` (``--preset``
    chooses the preset, which sets them all) and those of a type no single value given on the
    command line sets (``frame_skip_overrides``, a table only a preset sets)."""
    hints = typing.get_type_hints(DQNConfig)
    return [
        name
        for name, hint in hints.items()
        if name != "preset" and (hint in (int, float, bool) or typing.get_origin(hint) is Literal)
    ]


def flag_name(name: str) -> str:
    """The flag of the field ``name``: ``--learning-rate``, ``--steps`` (``total_steps``)."""
    flag = FLAGS.get(name)
    return "--" + ((flag and flag.name) or name).replace("_", "-")


def flag_of(name: str) -> str:
    """The field ``name`` as messages name it: ``--steps``; ``--gamma or --set gamma=...``."""
    return flag_name(name) + ("" if name in FLAGS else f" or --set {name}=...")


@functools.cache
def field_help() -> dict[str, str]:
    """Each field's docstring, on one line: the help text of its flag. Python keeps no
    attribute docstrings, so they are read from this module's source."""
    body = ast.parse(inspect.getsource(DQNConfig)).body[0]
    assert isinstance(body, ast.ClassDef)
    return {
        node.target.id: " ".join(following.value.value.split())
        for node, following in itertools.pairwise(body.body)
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and isinstance(following, ast.Expr)
        and isinstance(following.value, ast.Constant)
        and isinstance(following.value.value, str)
    }


NIPS2013 = DQNConfig()
"""Mnih et al. 2013: small network, one update per agent step, no target net."""

NATURE2015 = DQNConfig(
    preset="nature2015",
    network="nature2015",
    frame_skip_overrides=(),
    terminal_on_life_loss=True,
    loss="huber",
    update_period=4,
    target_update_agent_steps=10_000,
    total_steps=50_000_000,
)
"""Mnih et al. 2015 (Nature): larger network, target network, Huber loss, lost life = terminal."""

LAPTOP = DQNConfig(
    preset="laptop",
    network="nature2015",  # CleanRL's QNetwork is the Nature network
    frame_skip_overrides=(),  # CleanRL: MaxAndSkipEnv(skip=4) for every game
    terminal_on_life_loss=True,  # CleanRL: EpisodicLifeEnv
    loss="squared",
    loss_reduction="mean",  # CleanRL: F.mse_loss (its 1/2 is immaterial under Adam)
    optimizer="adam",
    learning_rate=1e-4,  # CleanRL dqn_atari: --learning-rate 1e-4
    update_period=4,  # CleanRL: --train-frequency 4
    target_update_agent_steps=1_000,  # CleanRL: --target-network-frequency 1000
    learning_starts=80_000,  # CleanRL: --learning-starts 80000
    epsilon_end=0.01,  # CleanRL: --end-e 0.01
    epsilon_decay_steps=1_000_000,  # CleanRL: --exploration-fraction 0.1 of 10M steps
    total_steps=10_000_000,  # CleanRL: --total-timesteps 10000000
    epoch_updates=12_500,  # a checkpoint and evaluation every 50,000 agent steps
)
"""The modern DQN setting of CleanRL's dqn_atari: Adam (as Dopamine's JAX agents also use) and
the mean squared TD error, a target network synced every 1,000 agent steps. At the budgets a
laptop affords (a few hundred thousand to a few million agent steps) it learns where the
papers' centered RMSProp settings have barely started (docs/learning.md), so it is the CLI's
default; the papers' presets are for reproducing the papers."""

PRESETS: dict[str, DQNConfig] = {"laptop": LAPTOP, "nips2013": NIPS2013, "nature2015": NATURE2015}
DEFAULT_PRESET = "laptop"


def preset(name: str) -> DQNConfig:
    """The named preset, or a UserError listing the valid names."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(DQNConfig)]


def with_overrides(config: DQNConfig, overrides: dict[str, object]) -> DQNConfig:
    """Return ``config`` with the given fields replaced, each converted to the field's type.

    Values may be strings (from ``--set name=value``); a wrong name or an unparsable value is
    a UserError.
    """
    hints = typing.get_type_hints(DQNConfig)
    changes: dict[str, object] = {}
    for name, value in overrides.items():
        if name not in hints or name == "frame_skip_overrides":
            raise UserError(f"unknown hyperparameter {name!r}; valid: {', '.join(field_names())}")
        changes[name] = _convert(name, value, hints[name])
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


def _convert(name: str, value: object, hint: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        if hint is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if hint is int:
            return int(value.replace("_", ""))
        if hint is float:
            return float(value)
    except ValueError:
        raise UserError(f"{name}={value!r} is not a valid {hint.__name__}") from None  # type: ignore[attr-defined]
    choices = typing.get_args(hint)
    if choices and value not in choices:
        raise UserError(f"{name}={value!r}: choose one of {', '.join(map(str, choices))}")
    return value


def parse_assignments(assignments: list[str]) -> dict[str, object]:
    """Parse ``name=value`` strings from ``--set``."""
    out: dict[str, object] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set expects name=value, got {item!r}")
        field = name.strip().replace("-", "_")
        if field == "preset":
            raise UserError(
                "--set preset: the preset is chosen with --preset (it sets every value it names); "
                "--set changes single values"
            )
        out[field] = value.strip()
    return out


__all__ = [
    "DEFAULT_PRESET",
    "LAPTOP",
    "NATURE2015",
    "NIPS2013",
    "PRESETS",
    "DQNConfig",
    "preset",
    "with_overrides",
]

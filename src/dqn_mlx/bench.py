"""``main.py --mode bench``: speed and memory of every stage on this machine.

Prints one figure per line, ``name value unit``, so a script can read it. Timings are medians
of repeated runs. The end-to-end figure runs the real training loop (``run.train.train``, Nature
preset: one update per 4 agent steps) and reads the rate of an epoch that starts after
learning has begun, so neither the random replay start nor evaluation is counted.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map

from dqn_mlx.config import PRESETS, DQNConfig, with_overrides
from dqn_mlx.core.env import AtariEnv, make_atari_env
from dqn_mlx.core.learner import PLAIN, Compute, Learner, minibatch_objective, td_loss, td_target
from dqn_mlx.core.network import Layers, QNetwork
from dqn_mlx.core.policy import greedy_policy
from dqn_mlx.core.replay import BYTES_PER_TRANSITION, ReplayStreams
from dqn_mlx.core.schedule import Schedule
from dqn_mlx.run.metrics import read_metrics
from dqn_mlx.run.train import train

BENCH_ENV = "BreakoutNoFrameskip-v4"
Emit = Callable[[str, float | str, str], None]


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def random_batch(rng: np.random.Generator, actions: int) -> tuple[np.ndarray, ...]:
    """A replay-shaped minibatch of 32: uint8 stacks, actions, clipped rewards, terminals."""
    return (
        rng.integers(0, 256, (32, 4, 84, 84), dtype=np.uint8),
        rng.integers(0, actions, 32),
        rng.choice([-1.0, 0.0, 1.0], 32).astype(np.float32),
        rng.integers(0, 256, (32, 4, 84, 84), dtype=np.uint8),
        (rng.random(32) < 0.05).astype(np.float32),
    )


def network_figures(
    preset: str, compute: Compute, emit: Callable[[str, float | str, str], None]
) -> None:
    """Compiled update (batch 32) and acting (one observation) for one preset's network."""
    learner = Learner(PRESETS[preset], 4, compute)
    batch = random_batch(np.random.default_rng(0), 4)
    emit(f"update_ms_{preset}", _median_ms(lambda: learner.update(*batch), 20), "ms")
    update_part_figures(preset, learner, batch, emit)
    act = greedy_policy(learner.online)
    emit(f"act_ms_{preset}", _median_ms(lambda: act(batch[0][0]), 50), "ms")


def update_part_figures(
    preset: str,
    learner: Learner,
    batch: tuple[np.ndarray, ...],
    emit: Callable[[str, float | str, str], None],
) -> None:
    """Where an update's time goes: its three parts, each compiled and timed alone.

    - ``target``: y = r + gamma max_a' Q(s', a'; theta^-), a forward pass with no gradient;
    - ``learning_pass``: the loss's value and gradient (forward and backward through theta);
    - ``optimizer``: the preset's optimizer (Adam or centered RMSProp) applied to every
      parameter;
    - ``optimizer_subnormal``: the same step with zero gradients over subnormal moments, what
      the units whose gradient stopped hold in a long run (their moments decay into the
      subnormal floats and stay there: Adam's first moment at 4 x 2^-149). On a CPU that
      slows down on subnormal arithmetic this is where a long run loses its speed.
    Each is timed alone; the whole update is one compiled graph, so its time is not exactly
    the parts' sum."""
    states, actions, rewards, next_states, terminals = (
        mx.array(batch[0]),
        mx.array(batch[1], dtype=mx.int32),
        mx.array(batch[2]),
        mx.array(batch[3]),
        mx.array(batch[4]),
    )
    targets_of = _compiled_targets(learner)
    targets = targets_of(next_states, rewards, terminals)
    learning_pass = _compiled_learning_pass(learner)
    _, grads = learning_pass(states, actions, targets)
    optimizer_step = _compiled_optimizer_step(learner)
    parts: dict[str, Callable[[], object]] = {
        "target": lambda: mx.eval(targets_of(next_states, rewards, terminals)),
        "learning_pass": lambda: mx.eval(learning_pass(states, actions, targets)),
        "optimizer": lambda: optimizer_step(grads),
    }
    for name, part in parts.items():
        emit(f"update_{name}_ms_{preset}", _median_ms(part, 20), "ms")
    zero_grads = tree_map(mx.zeros_like, grads)
    set_moments_subnormal(learner.optimizer.state)
    emit(
        f"update_optimizer_subnormal_ms_{preset}",
        _median_ms(lambda: optimizer_step(zero_grads), 20),
        "ms",
    )


def _compiled_targets(learner: Learner) -> Callable[[mx.array, mx.array, mx.array], mx.array]:
    """The TD targets of a minibatch (next states, rewards, terminals), compiled alone."""
    config = learner.config
    evaluator = learner.target if learner.target is not None else learner.online

    @partial(mx.compile, inputs=evaluator.state)
    def targets_of(next_states: mx.array, rewards: mx.array, terminals: mx.array) -> mx.array:
        return td_target(rewards, terminals, evaluator(next_states), config.gamma)

    return targets_of


def _compiled_learning_pass(learner: Learner) -> Callable[[mx.array, mx.array, mx.array], Any]:
    """The loss's value and gradient given the targets (states, actions, targets), compiled
    alone."""
    config, online = learner.config, learner.online

    def loss(model: QNetwork, states: mx.array, actions: mx.array, y: mx.array) -> mx.array:
        q_taken = mx.take_along_axis(model(states), actions[:, None], axis=1).squeeze(1)
        return minibatch_objective(td_loss(q_taken, y, config.loss), config.loss_reduction)

    loss_and_grad = nn.value_and_grad(online, loss)

    # outputs too: value_and_grad sets the parameters it differentiates on the model
    @partial(mx.compile, inputs=online.state, outputs=online.state)
    def learning_pass(states: mx.array, actions: mx.array, y: mx.array) -> Any:
        return loss_and_grad(online, states, actions, y)

    return learning_pass


def _compiled_optimizer_step(learner: Learner) -> Callable[[Any], None]:
    """One optimizer step on given gradients, compiled alone and evaluated."""
    online, optimizer = learner.online, learner.optimizer
    state = [online.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def optimizer_step(grads: Any) -> None:
        optimizer.update(online, grads)

    def run(grads: Any) -> None:
        optimizer_step(grads)
        mx.eval(state)

    return run


SUBNORMAL = 2.0**-140
"""A subnormal float32 (below 2^-126): where a moment is some hundred (Adam's m, decay 0.9)
to some ten thousand (its v, decay 0.999) updates after its gradient stopped."""


def set_moments_subnormal(state: dict[str, Any] | list[Any]) -> None:
    """Every moment array in an optimizer's state (each array with a dimension; the step count
    and learning rate are scalars) set to ``SUBNORMAL``, in place, so that a compiled step that
    captured the state reads it."""
    keys: list[Any] = list(state) if isinstance(state, dict) else list(range(len(state)))
    for key in keys:
        value = state[key]
        if isinstance(value, dict | list):
            set_moments_subnormal(value)
        elif isinstance(value, mx.array) and value.ndim > 0:
            state[key] = mx.full(value.shape, SUBNORMAL, value.dtype)


def env_steps_per_s(steps: int = 2_000) -> float:
    env = make_atari_env(BENCH_ENV, 4, 30, 108_000, seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(env.num_actions, size=steps)
    env.reset()
    start = time.perf_counter()
    for a in actions:
        env.step(int(a))
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def replay_figures(emit: Callable[[str, float | str, str], None], capacity: int = 100_000) -> None:
    memory = ReplayStreams(capacity, 4, 32)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (64, 84, 84), dtype=np.uint8)
    for _lap in range(2):  # the second lap overwrites: the steady state of a long run
        start = time.perf_counter()
        for i in range(capacity):
            memory.add(0, frames[i % 64], i % 4, 0.0, i % 997 == 0, i % 997 == 1)
    emit("replay_insert_us", 1e6 * (time.perf_counter() - start) / capacity, "us")
    emit("replay_sample_ms", _median_ms(lambda: memory.sample(32, rng), 200), "ms")
    emit("replay_bytes_per_transition", BYTES_PER_TRANSITION, "bytes")
    emit("replay_bytes_1m_transitions", BYTES_PER_TRANSITION * 1_000_000 / 1e9, "GB")


def loop_config(steps: int, num_envs: int = 1) -> DQNConfig:
    """The end-to-end loop's run: the Nature preset (``num_envs`` games at once) on a small
    replay, epoch 1 the random replay start plus ``steps`` agent steps of warm-up, epoch 2 the
    ``steps`` measured. Epsilon is its final 0.1 from the start, so 90% of the actions are
    greedy, as in all but the first million agent steps of a run."""
    base = PRESETS["nature2015"]
    steps = max(num_envs, steps - steps % num_envs)  # whole passes of the loop
    sized: dict[str, object] = {"replay_size": 20_000, "learning_starts": 500,
                                "total_steps": 500 + 2 * steps}  # fmt: skip
    first_epoch = Schedule.of(with_overrides(base, sized)).updates_by(500 + steps)
    return with_overrides(
        base,
        {
            **sized,
            "epsilon_start": base.epsilon_end,
            "epoch_updates": first_epoch,
            "eval_steps": 100,
            "held_out_states": 32,
            "num_envs": num_envs,
        },
    )


def end_to_end_steps_per_s(steps: int, compute: Compute = PLAIN, num_envs: int = 1) -> float:
    """Agent steps/s of ``train`` on ``loop_config`` once learning has started (its epoch 2)."""
    config = loop_config(steps, num_envs)
    with tempfile.TemporaryDirectory() as tmp:

        def make_env(seed: int) -> AtariEnv:
            return make_atari_env(BENCH_ENV, 4, 30, 108_000, seed)

        out = train(
            config,
            BENCH_ENV,
            make_env,
            Path(tmp),
            log=lambda _: None,
            frame_skip=4,
            compute=compute,
        )
        return float(read_metrics(out)[1]["agent_steps_per_s"])


def peak_memory_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def measure_gflops(layers: Layers, size: int = 512, repeats: int = 5) -> float:
    """Median GFLOP/s of a (size x size) @ (size x size) float32 product through the
    network's dense layer (a probe of the products the layers compute with)."""
    layer = layers.dense(size, size, relu=False)
    x = mx.random.normal((size, size))
    mx.eval(layer.parameters(), x, layer(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(layer(x))
        times.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(times) / 1e9


COMMAND = [sys.executable, "-c", "from dqn_mlx.cli import run; run()"]
"""``main.py``, installed or not: the share benchmark's processes are the user's commands."""


def _training_process(steps: int, folder: Path) -> subprocess.Popen[bytes]:
    """``--mode train`` of ``loop_config`` in ``folder``, with the defaults a user gets
    (its threads among them): a training-shaped process."""
    config, base = loop_config(steps), PRESETS["nature2015"]
    changed = [f"--set={name}={getattr(config, name)}" for name in config.__dataclass_fields__
               if getattr(config, name) != getattr(base, name)]  # fmt: skip
    command = [*COMMAND, "--mode", "train", "--env", BENCH_ENV, "--preset", "nature2015",
               *changed, "--weights-dir", str(folder), "--run-name", "loop"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _rate_of(process: subprocess.Popen[bytes], folder: Path) -> float:
    """The training process's agent steps/s in its measured epoch (its metrics' epoch 2)."""
    _, errors = process.communicate()
    if process.returncode != 0:
        last = errors.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"the share benchmark's training failed: {last[0]}")
    return float(read_metrics(folder / BENCH_ENV / "loop")[1]["agent_steps_per_s"])


def _trainings(steps: int, count: int, root: Path, beside: list[str] | None = None) -> list[float]:
    """Start ``count`` training processes at once (beside the command ``beside``, started
    first and stopped once they end); their rates."""
    other = subprocess.Popen(beside, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) if beside else None  # fmt: skip
    try:
        folders = [Path(tempfile.mkdtemp(dir=root)) for _ in range(count)]
        processes = [_training_process(steps, folder) for folder in folders]
        return [_rate_of(p, f) for p, f in zip(processes, folders, strict=True)]
    finally:
        if other is not None:
            other.kill()
            other.wait()


def share_figures(steps: int, rounds: int, emit: Emit) -> None:
    """How a training shares the machine (issue: two processes on the same cores must not
    collapse): a training-shaped process (``loop_config``, ``--mode train`` with its default
    threads) alone, beside a ``--mode eval`` with its default threads, and beside a second
    training, in ``rounds`` alternating rounds. Figures: the lone rate, and medians over rounds
    of the rate beside an evaluation, of the slower of the pair and of the pair together, each
    as a fraction of the lone rate."""
    alone, beside_eval, slower, together = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first = Path(tempfile.mkdtemp(dir=root))
        _rate_of(_training_process(steps, first), first)  # a checkpoint to evaluate; warm-up
        checkpoint = first / BENCH_ENV / "loop" / "epoch_1.safetensors"
        evaluation = [*COMMAND, "--mode", "eval", "--load-path", str(checkpoint),
                      "--episodes", "100000"]  # fmt: skip
        for round_ in range(rounds):
            progress(f"share round {round_ + 1} of {rounds}: a training alone, beside an "
                     "evaluation, beside a second training")  # fmt: skip
            (lone,) = _trainings(steps, 1, root)
            (near_eval,) = _trainings(steps, 1, root, evaluation)
            pair = _trainings(steps, 2, root)
            alone.append(lone)
            beside_eval.append(near_eval / lone)
            slower.append(min(pair) / lone)
            together.append(sum(pair) / lone)
    emit("share_alone", statistics.median(alone), "agent_steps/s")
    emit("share_beside_eval", statistics.median(beside_eval), "of_alone")
    emit("share_pair_slower", statistics.median(slower), "of_alone")
    emit("share_pair_together", statistics.median(together), "of_alone")


def progress(text: str) -> None:
    """A progress line, on stderr: stdout holds only the figures."""
    print(f"bench: {text}", file=sys.stderr, flush=True)


PARTS = (
    "the layers' matrix product",
    "each preset's update and acting times",
    "the emulator and the replay memory",
    "the end-to-end training loop, one game and four",
    "sharing the cores: a training alone, beside an evaluation, beside a second training",
)


def run_benchmark(end_to_end_steps: int = 2_000, compute: Compute = PLAIN, rounds: int = 1) -> None:
    """Every figure, one per line on stdout, computed with ``compute`` (the CLI passes the
    platform's); on stderr, what it measures, a line as each part starts, and a summary in
    words at the end. ``rounds``: of the share benchmark."""
    figures: dict[str, float | str] = {}

    def emit(name: str, value: float | str, unit: str) -> None:
        figures[name] = value
        text = (
            f"{value:.3g}"
            if isinstance(value, float) and value < 10
            else (f"{value:.1f}" if isinstance(value, float) else str(value))
        )
        print(f"{name} {text} {unit}", flush=True)

    progress(f"measuring {len(PARTS)} parts: " + "; ".join(PARTS) + f" ({rounds} round"
             f"{'s' if rounds > 1 else ''}). A few minutes on 2 quiet cores, several times that "
             "beside another busy process; a line as each part starts.")  # fmt: skip
    parts = iter(enumerate(PARTS, 1))

    def next_part() -> None:
        number, name = next(parts)
        progress(f"part {number} of {len(PARTS)}: {name}")

    emit("device", "gpu" if mx.default_device() == mx.gpu else "cpu", "-")
    emit("compute", compute.name.replace(" ", "_"), "-")
    next_part()
    emit("blas_gflops", measure_gflops(compute.layers), "GFLOP/s")
    next_part()
    for preset in PRESETS:
        network_figures(preset, compute, emit)
    next_part()
    emit("env_agent_steps_per_s", env_steps_per_s(), "agent_steps/s")
    replay_figures(emit)
    next_part()
    for num_envs, suffix in ((1, ""), (4, "_envs4")):
        rate = end_to_end_steps_per_s(end_to_end_steps, compute, num_envs)
        emit(f"end_to_end_nature2015{suffix}", rate, "agent_steps/s")
    emit("peak_memory", peak_memory_mib(), "MiB")
    next_part()
    share_figures(end_to_end_steps, rounds, emit)
    for line in summary(figures):
        progress(line)


def summary(figures: dict[str, float | str]) -> list[str]:
    """The few figures that matter, in words."""
    return [
        f"summary: a Nature update (batch 32) takes {figures['update_ms_nature2015']:.1f} ms "
        f"with {figures['compute']}; the training loop runs "
        f"{figures['end_to_end_nature2015']:.0f} agent steps/s with one game and "
        f"{figures['end_to_end_nature2015_envs4']:.0f} with four; the process peaked at "
        f"{figures['peak_memory']:.0f} MiB.",
        f"summary: beside an evaluation a training keeps {figures['share_beside_eval']:.0%} of "
        f"its lone {figures['share_alone']:.0f} agent steps/s; two trainings keep "
        f"{figures['share_pair_slower']:.0%} each at least, together "
        f"{figures['share_pair_together']:.0%} of one alone.",
    ]

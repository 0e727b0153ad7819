"""The learning rule: TD target, loss, centered RMSProp, the compiled update, epsilon.

Each equation lives in one function:
- ``td_target``:  y_j = r_j                                   if s_{j+1} is terminal
                  y_j = r_j + gamma * max_a' Q(s_{j+1}, a'; theta^-)   otherwise   (2013 Alg. 1)
- ``td_loss``:    1/2 (y_j - Q(s_j, a_j; theta))^2 per sample (2013 Eq. 2), or its Huber
                  form, whose gradient is the TD error clipped to [-1, 1] (2015 Methods).
- ``minibatch_objective``: the per-sample losses summed (DeepMind) or averaged (CleanRL).
- ``CenteredRMSProp``: the RMSProp variant of DeepMind's 2015 code (2015 Table 1 constants);
  ``make_optimizer`` picks it or Adam.
- ``linear_epsilon``: epsilon annealed linearly, then fixed (both papers).

theta^- is the target network's parameters (2015), synced every ``target_update_agent_steps``
agent steps (``Learner.target_sync_due``), or, with that period 0, the online parameters
before this update, theta_{i-1} (2013): the target is then computed from the online network
under ``stop_gradient``.

The papers' presets sum the loss over the minibatch, as DeepMind's implementation accumulates
each sample's gradient; centered RMSProp divides out the gradient's scale, except for the
``min_sq`` term, which was tuned against summed gradients of 1/2 e^2 (gradient: the TD error).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from dqn_mlx.config import DQNConfig
from dqn_mlx.evaluate import Policy, greedy_policy
from dqn_mlx.network import QNetwork
from dqn_mlx.numpy_actor import numpy_greedy_policy


def linear_epsilon(step: int, start: float, end: float, decay_steps: int) -> float:
    """Exploration rate at an agent step: linear from ``start`` to ``end`` over ``decay_steps``."""
    if decay_steps <= 0 or step >= decay_steps:
        return end
    return start + (end - start) * step / decay_steps


def td_target(rewards: mx.array, terminals: mx.array, next_q: mx.array, gamma: float) -> mx.array:
    """y = r + gamma * (1 - terminal) * max_a' Q(s', a'): terminal transitions do not bootstrap.

    rewards, terminals: (batch,); next_q: (batch, actions). Returns (batch,).
    """
    return rewards + gamma * (1.0 - terminals) * next_q.max(axis=1)


def td_loss(q_taken: mx.array, targets: mx.array, kind: str) -> mx.array:
    """Per-sample loss (batch,) of the TD error e = y - Q(s, a).

    ``squared`` is 1/2 e^2: its gradient with respect to Q is -e, the TD error itself, which is
    what DeepMind's ``NeuralQLearner.lua`` back-propagates (``getQUpdate`` returns delta as the
    gradient). ``huber`` (delta 1) is 1/2 e^2 for |e| <= 1 and |e| - 1/2 beyond, so its gradient
    is the TD error clipped to [-1, 1] (2015 Methods, ``clip_delta = 1`` in that code)."""
    error = targets - q_taken  # (batch,)
    if kind == "huber":
        abs_error = mx.abs(error)
        quadratic = mx.minimum(abs_error, 1.0)
        return 0.5 * quadratic**2 + (abs_error - quadratic)
    return 0.5 * error**2


def minibatch_objective(per_sample: mx.array, reduction: str) -> mx.array:
    """The minibatch's loss: per-sample losses summed (DeepMind's accumulated gradients) or
    averaged (CleanRL's ``F.mse_loss``)."""
    return mx.sum(per_sample) if reduction == "sum" else mx.mean(per_sample)


class CenteredRMSProp(optim.Optimizer):
    r"""RMSProp as in DeepMind's 2015 DQN (not MLX's plain RMSprop):

    g    <- a g    + (1 - a) grad
    g2   <- b g2   + (1 - b) grad^2
    theta <- theta - lr * grad / sqrt(g2 - g^2 + min_sq)

    with a = gradient momentum 0.95, b = squared-gradient momentum 0.95, min_sq = 0.01 and
    lr = 2.5e-4 (2015 Extended Data Table 1).
    """

    def __init__(self, learning_rate: float, grad_decay: float, sq_decay: float, min_sq: float):
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.grad_decay = grad_decay
        self.sq_decay = sq_decay
        self.min_sq = min_sq

    def init_single(self, parameter: mx.array, state: dict) -> None:
        state["g"] = mx.zeros_like(parameter)
        state["g2"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        lr = self.learning_rate.astype(gradient.dtype)
        g = self.grad_decay * state["g"] + (1 - self.grad_decay) * gradient
        g2 = self.sq_decay * state["g2"] + (1 - self.sq_decay) * mx.square(gradient)
        state["g"], state["g2"] = g, g2
        return parameter - lr * gradient / mx.sqrt(g2 - mx.square(g) + self.min_sq)


def make_optimizer(config: DQNConfig) -> optim.Optimizer:
    """The config's optimizer. Adam with bias correction, as PyTorch's (CleanRL's) Adam has;
    MLX's Adam leaves it off unless asked."""
    if config.optimizer == "adam":
        return optim.Adam(config.learning_rate, eps=config.adam_eps, bias_correction=True)
    return CenteredRMSProp(
        config.learning_rate, config.rms_grad_decay, config.rms_sq_decay, config.rms_min_sq
    )


_update_jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
_update_thread: threading.Thread | None = None


def _serve_update_jobs() -> None:
    while True:
        job, future = _update_jobs.get()
        try:
            future.set_result(job())
        except BaseException as exc:  # handed to the waiting thread by future.result()
            future.set_exception(exc)


def run_on_update_thread(job: Callable[[], Any]) -> Future[Any]:
    """Run ``job`` on the process's one update thread; its result comes back as a Future.

    An update overlaps acting only on another thread: MLX releases the GIL while it computes,
    whereas its ``async_eval`` on the CPU returns only once at most ~10 tasks are left to run.
    A daemon thread that lives as long as the process: MLX keeps per-thread stream state, and
    a thread that ends while that state exists (as a ``ThreadPoolExecutor``'s workers do at
    interpreter exit) can abort the process ("terminate called without an active exception").
    """
    global _update_thread
    if _update_thread is None:
        _update_thread = threading.Thread(target=_serve_update_jobs, name="dqn-update", daemon=True)
        _update_thread.start()
    future: Future[Any] = Future()
    _update_jobs.put((job, future))
    return future


class Learner:
    """Owns theta, theta^- and the optimizer, and applies compiled minibatch updates."""

    def __init__(self, config: DQNConfig, num_actions: int):
        self.config = config
        self.online = QNetwork(num_actions, config.network, config.history_length)
        mx.eval(self.online.parameters())
        self.target: QNetwork | None = None
        if config.target_update_agent_steps > 0:
            self.target = QNetwork(num_actions, config.network, config.history_length)
            self.sync_target()
        self.optimizer = make_optimizer(config)
        self.updates = 0
        self._step = self._build_step()
        # The network that chooses actions (the behaviour policy): the online weights, or
        # with ``overlap_acting`` the weights before the update in flight. ``behaviour_policy``
        # evaluates it in numpy on the CPU, and on a GPU on its own stream (``act_stream``).
        self.actor = QNetwork(num_actions, config.network, config.history_length)
        self.actor.update(self.online.parameters())
        self.act_stream = mx.new_stream(mx.default_device())
        self._in_flight: Future[mx.array] | mx.array | None = None

    def _build_step(self) -> Any:
        config, online, target, optimizer = self.config, self.online, self.target, self.optimizer

        def loss_fn(
            model: QNetwork,
            states: mx.array,
            actions: mx.array,
            rewards: mx.array,
            next_states: mx.array,
            terminals: mx.array,
        ) -> mx.array:
            next_q = mx.stop_gradient(
                (target if target is not None else model).predict(next_states)
            )
            targets = td_target(rewards, terminals, next_q, config.gamma)  # (batch,)
            q = model(states)  # (batch, actions)
            q_taken = mx.take_along_axis(q, actions[:, None], axis=1).squeeze(1)  # (batch,)
            return minibatch_objective(
                td_loss(q_taken, targets, config.loss), config.loss_reduction
            )

        loss_and_grad = nn.value_and_grad(online, loss_fn)
        # Everything the step reads or writes is compile state, the target network included:
        # arrays left out would be frozen into the compiled graph as constants.
        state: list[Any] = [online.state, optimizer.state]
        if target is not None:
            state.append(target.state)

        @partial(mx.compile, inputs=state, outputs=state)
        def step(
            states: mx.array,
            actions: mx.array,
            rewards: mx.array,
            next_states: mx.array,
            terminals: mx.array,
        ) -> mx.array:
            loss, grads = loss_and_grad(online, states, actions, rewards, next_states, terminals)
            optimizer.update(online, grads)
            # Reported per sample whatever the reduction, so logs compare across presets.
            return loss / states.shape[0] if config.loss_reduction == "sum" else loss

        self._state = state
        return step

    def rebuild_step(self) -> None:
        """Compile the step again: needed after the optimizer's state object is replaced
        (a restored checkpoint), since the compiled step holds the old one as its state."""
        self._step = self._build_step()

    def start_update(
        self, states: Any, actions: Any, rewards: Any, next_states: Any, terminals: Any
    ) -> None:
        """Begin one minibatch update; ``finish_update`` ends it and gives its loss.

        Inputs are numpy arrays from the replay: states and next_states (batch, history, 84,
        84) uint8, actions (batch,) int, rewards (batch,) float32 clipped, terminals (batch,).
        With ``overlap_acting`` it computes on a worker thread while the caller acts with
        ``actor`` (the weights before this update: ``behaviour_policy``); until
        ``finish_update`` nothing else of the learner may be read. Otherwise it is done on
        return.
        """
        if self._in_flight is not None:
            raise RuntimeError("finish_update() the update in flight before starting another")
        inputs = (
            mx.array(states),
            mx.array(actions, dtype=mx.int32),
            mx.array(rewards, dtype=mx.float32),
            mx.array(next_states),
            mx.array(terminals, dtype=mx.float32),
        )
        self.updates += 1
        if self.config.overlap_acting:
            self.actor.update(self.online.parameters())  # theta_{k-1}, already computed
            # MLX streams belong to the thread that made them: the worker builds the graph
            # too, not only waits for it.
            self._in_flight = run_on_update_thread(partial(self._run_step, inputs))
        else:
            self._in_flight = self._run_step(inputs)

    def behaviour_policy(self) -> Policy:
        """argmax_a Q(s, a; ``actor``) for one uint8 stack, the loop's greedy action.

        On the CPU it is computed in numpy (``numpy_actor``): with ``overlap_acting`` an MLX
        forward pass would queue behind the update in flight (9 ms per action in the loop,
        against 1.9 ms in numpy), and in the strict order the loop ran 8-28% faster with numpy
        (docs/performance.md). On a GPU it is compiled MLX on ``act_stream``."""
        if mx.default_device() == mx.cpu:
            return numpy_greedy_policy(self.actor)
        return greedy_policy(self.actor, self.act_stream)

    def _run_step(self, inputs: tuple[mx.array, ...]) -> mx.array:
        loss = self._step(*inputs)
        mx.eval(loss, self._state)
        return loss

    def finish_update(self) -> mx.array | None:
        """Wait for the update in flight; its mean per-sample loss (computed), or None if
        there is none."""
        if self._in_flight is None:
            return None
        job, self._in_flight = self._in_flight, None
        loss = job.result() if isinstance(job, Future) else job  # re-raises the worker's errors
        if not self.config.overlap_acting:
            self.actor.update(self.online.parameters())  # theta_k
        return loss

    def update(
        self, states: Any, actions: Any, rewards: Any, next_states: Any, terminals: Any
    ) -> mx.array:
        """One whole minibatch update (start and finish); returns the mean per-sample loss."""
        self.start_update(states, actions, rewards, next_states, terminals)
        loss = self.finish_update()
        assert loss is not None
        return loss

    def target_sync_due(self, agent_step: int) -> bool:
        """Whether theta^- <- theta is due after ``agent_step`` agent steps: every
        ``target_update_agent_steps`` agent steps, whatever the update period, as DeepMind's
        code counts it (``numSteps % target_q == 1``: after agent steps 1, target_q + 1, ...;
        here after target_q, 2 target_q, ..., the copy made at construction standing for the
        first)."""
        period = self.config.target_update_agent_steps
        return self.target is not None and agent_step % period == 0

    def sync_target(self) -> None:
        """theta^- <- theta (arrays are immutable, so sharing them is a copy in effect)."""
        if self.target is not None:
            self.target.update(tree_map(lambda x: x, self.online.parameters()))
            mx.eval(self.target.parameters())

    def q_values(self, states: Any) -> mx.array:
        """Q(s, .; theta) for a batch of uint8 stacks: (batch, actions)."""
        return self.online.predict(mx.array(states))

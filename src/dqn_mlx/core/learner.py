"""The learning rule: TD target, loss, centered RMSProp and the compiled update.

Each equation lives in one function:
- ``td_target``:  y_j = r_j                                   if s_{j+1} is terminal
                  y_j = r_j + gamma * max_a' Q(s_{j+1}, a'; theta^-)   otherwise   (2013 Alg. 1)
- ``td_loss``:    1/2 (y_j - Q(s_j, a_j; theta))^2 per sample (2013 Eq. 2), or its Huber
                  form, whose gradient is the TD error clipped to [-1, 1] (2015 Methods).
- ``minibatch_objective``: the per-sample losses summed (DeepMind) or averaged (CleanRL).
- ``CenteredRMSProp``: the RMSProp variant of DeepMind's 2015 code (2015 Table 1 constants);
  ``make_optimizer`` picks it or Adam.
- ``Compute``: the layers and optimizer classes a learner computes with (``PLAIN``: MLX's own).
  A platform may bring equal ones (``dqn_mlx.accel``); the algorithm here never changes.
- ``Learner``: theta, theta^- and the optimizer, and the compiled update.

theta^- is the target network's parameters (2015), synced every ``target_update_agent_steps``
agent steps (when: ``core.schedule.Schedule.syncs_target_at``), or, with that period 0, the
online parameters before this update, theta_{i-1} (2013): the target is then computed from the
online network under ``stop_gradient``.

The papers' presets sum the loss over the minibatch, as DeepMind's implementation accumulates
each sample's gradient; centered RMSProp divides out the gradient's scale, except for the
``min_sq`` term, which was tuned against summed gradients of 1/2 e^2 (gradient: the TD error).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from dqn_mlx.config import DQNConfig
from dqn_mlx.core.network import PLAIN as PLAIN_LAYERS
from dqn_mlx.core.network import Layers, QNetwork


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


@dataclass(frozen=True)
class Compute:
    """How a learner computes: the network's layers and the optimizers' classes. Every
    ``Compute`` computes the same functions as ``PLAIN`` (a platform's are proven equal by its
    tests), so a run's results and checkpoints do not depend on it beyond float rounding."""

    name: str
    layers: Layers
    adam: type[optim.Adam]
    rmsprop: type[CenteredRMSProp]


PLAIN = Compute("MLX's own layers and optimizer", PLAIN_LAYERS, optim.Adam, CenteredRMSProp)
"""The definitions: MLX's own layers and optimizers."""


def make_optimizer(config: DQNConfig, compute: Compute = PLAIN) -> optim.Optimizer:
    """The config's optimizer. Adam with bias correction, as PyTorch's (CleanRL's) Adam has;
    MLX's Adam leaves it off unless asked."""
    if config.optimizer == "adam":
        return compute.adam(config.learning_rate, eps=config.adam_eps, bias_correction=True)
    return compute.rmsprop(
        config.learning_rate, config.rms_grad_decay, config.rms_sq_decay, config.rms_min_sq
    )


class UpdateStats(NamedTuple):
    """What one update reports: its loss per sample, the minibatch's mean max_a Q(s, a) (before
    the step; a cheap running view of the values being learnt), and the updates made so far."""

    loss: float
    mean_max_q: float
    updates: int


class Learner:
    """Owns theta, theta^- and the optimizer, and applies compiled minibatch updates.

    ``update`` is synchronous: when it returns, theta holds the new weights, so the next
    action is chosen with them (Algorithm 1's order)."""

    def __init__(self, config: DQNConfig, num_actions: int, compute: Compute = PLAIN):
        self.config = config
        self.compute = compute
        layers = compute.layers
        self.online = QNetwork(num_actions, config.network, config.history_length, layers)
        mx.eval(self.online.parameters())
        self.target: QNetwork | None = None
        if config.target_update_agent_steps > 0:
            self.target = QNetwork(num_actions, config.network, config.history_length, layers)
            self.sync_target()
        self.optimizer = make_optimizer(config, compute)
        self.updates = 0
        self._step = self._build_step()

    def _build_step(self) -> Any:
        config, online, target, optimizer = self.config, self.online, self.target, self.optimizer

        def loss_fn(
            model: QNetwork,
            states: mx.array,
            actions: mx.array,
            rewards: mx.array,
            next_states: mx.array,
            terminals: mx.array,
        ) -> tuple[mx.array, mx.array]:
            next_q = mx.stop_gradient((target if target is not None else model)(next_states))
            targets = td_target(rewards, terminals, next_q, config.gamma)  # (batch,)
            q = model(states)  # (batch, actions)
            q_taken = mx.take_along_axis(q, actions[:, None], axis=1).squeeze(1)  # (batch,)
            objective = minibatch_objective(
                td_loss(q_taken, targets, config.loss), config.loss_reduction
            )
            return objective, mx.mean(mx.max(q, axis=1))  # the gradient is the objective's

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
        ) -> tuple[mx.array, mx.array]:
            (loss, max_q), grads = loss_and_grad(
                online, states, actions, rewards, next_states, terminals
            )
            optimizer.update(online, grads)
            # Reported per sample whatever the reduction, so logs compare across presets.
            return (loss / states.shape[0] if config.loss_reduction == "sum" else loss), max_q

        self._state = state
        return step

    def rebuild_step(self) -> None:
        """Compile the step again: needed after the optimizer's state object is replaced
        (a restored checkpoint), since the compiled step holds the old one as its state."""
        self._step = self._build_step()

    def update(
        self, states: Any, actions: Any, rewards: Any, next_states: Any, terminals: Any
    ) -> UpdateStats:
        """One minibatch gradient step on the TD loss; returns its loss per sample and the
        minibatch's mean max-Q.

        Inputs are numpy arrays from the replay: states and next_states (batch, history, 84,
        84) uint8, actions (batch,) int, rewards (batch,) float32 clipped, terminals (batch,).
        """
        loss, max_q = self._step(
            mx.array(states),
            mx.array(actions, dtype=mx.int32),
            mx.array(rewards, dtype=mx.float32),
            mx.array(next_states),
            mx.array(terminals, dtype=mx.float32),
        )
        mx.eval(loss, max_q, self._state)
        self.updates += 1
        return UpdateStats(float(loss.item()), float(max_q.item()), self.updates)

    def sync_target(self) -> None:
        """theta^- <- theta (arrays are immutable, so sharing them is a copy in effect)."""
        if self.target is not None:
            self.target.update(tree_map(lambda x: x, self.online.parameters()))
            mx.eval(self.target.parameters())

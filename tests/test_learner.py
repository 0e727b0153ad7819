"""TD target, loss, optimizer and compiled update, checked against hand computations."""

from __future__ import annotations

import dataclasses
from functools import partial

import mlx.core as mx
import numpy as np
import pytest
from compute import COMPUTE
from mlx.utils import tree_flatten, tree_map

from dqn_mlx.config import LAPTOP, NATURE2015, NIPS2013
from dqn_mlx.core.learner import (
    CenteredRMSProp,
    Learner,
    make_optimizer,
    minibatch_objective,
    td_loss,
    td_target,
)
from dqn_mlx.core.policy import exploration_rate
from dqn_mlx.core.schedule import Schedule


def test_td_target_bootstraps_only_non_terminal_transitions() -> None:
    rewards = mx.array([1.0, -1.0, 0.0])
    terminals = mx.array([0.0, 1.0, 0.0])
    next_q = mx.array([[0.5, 2.0], [10.0, 3.0], [-1.0, -2.0]])
    y = td_target(rewards, terminals, next_q, gamma=0.9)
    # 1 + 0.9 * 2 ; terminal: just -1 ; 0 + 0.9 * -1
    assert np.allclose(np.array(y), [2.8, -1.0, -0.9])


def test_squared_and_huber_losses_by_hand() -> None:
    q = mx.array([0.0, 1.0, 3.0])
    y = mx.array([0.5, -1.0, 3.25])  # errors 0.5, -2.0, 0.25
    assert np.allclose(np.array(td_loss(q, y, "squared")), [0.125, 2.0, 0.03125])  # 1/2 e^2
    # Huber delta 1: 0.5 e^2 inside, |e| - 0.5 outside
    assert np.allclose(np.array(td_loss(q, y, "huber")), [0.125, 1.5, 0.03125])
    grad = mx.grad(lambda qq: td_loss(qq, y, "huber").sum())(q)
    assert np.allclose(np.array(grad), [-0.5, 1.0, -0.25])  # TD error clipped to [-1, 1]


def test_squared_loss_gradient_is_the_td_error_itself() -> None:
    """DeepMind's update back-propagates delta = y - Q unscaled: the gradient of 1/2 e^2, not
    of e^2 (which would double every step's size under centered RMSProp's min_sq term)."""
    q = mx.array([0.0, 1.0, 3.0, -2.0])
    y = mx.array([0.5, -1.0, 3.25, 4.0])
    grad = mx.grad(lambda qq: td_loss(qq, y, "squared").sum())(q)
    assert np.allclose(np.array(grad), -(np.array(y) - np.array(q)))


def test_minibatch_objective_sums_or_averages() -> None:
    per_sample = mx.array([1.0, 2.0, 6.0])
    assert float(minibatch_objective(per_sample, "sum")) == pytest.approx(9.0)
    assert float(minibatch_objective(per_sample, "mean")) == pytest.approx(3.0)


def test_epsilon_is_one_during_the_replay_start_then_annealed_linearly() -> None:
    cfg = dataclasses.replace(
        NIPS2013, learning_starts=100, epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=1000
    )
    assert exploration_rate(cfg, 99) == 1.0  # random replay start
    assert exploration_rate(cfg, 100) == 1.0
    assert exploration_rate(cfg, 600) == pytest.approx(0.55)
    assert exploration_rate(cfg, 1100) == pytest.approx(0.1)
    assert exploration_rate(cfg, 10**7) == pytest.approx(0.1)
    assert exploration_rate(dataclasses.replace(cfg, epsilon_decay_steps=0), 100) == 0.1


def test_centered_rmsprop_step_by_hand() -> None:
    opt = CenteredRMSProp(0.1, grad_decay=0.9, sq_decay=0.8, min_sq=0.01)
    params = {"w": mx.array([1.0, -2.0])}
    grads = {"w": mx.array([0.5, -1.0])}
    opt.init(params)
    new = opt.apply_gradients(grads, params)
    g = 0.1 * np.array([0.5, -1.0])
    g2 = 0.2 * np.array([0.25, 1.0])
    expected = np.array([1.0, -2.0]) - 0.1 * np.array([0.5, -1.0]) / np.sqrt(g2 - g**2 + 0.01)
    assert np.allclose(np.array(new["w"]), expected, atol=1e-6)


def _batch(rng: np.random.Generator, n: int = 8) -> tuple[np.ndarray, ...]:
    states = rng.integers(0, 256, (n, 4, 84, 84), dtype=np.uint8)
    next_states = rng.integers(0, 256, (n, 4, 84, 84), dtype=np.uint8)
    actions = rng.integers(0, 3, n)
    rewards = rng.choice([-1.0, 0.0, 1.0], n).astype(np.float32)
    terminals = (np.arange(n) % 3 == 0).astype(np.float32)
    return states, actions, rewards, next_states, terminals


def _expected_loss(learner: Learner, target_net: object, batch: tuple[np.ndarray, ...]) -> float:
    states, actions, rewards, next_states, terminals = batch
    q = np.array(learner.online(mx.array(states)))
    next_q = np.array(target_net(mx.array(next_states)))  # type: ignore[operator]
    y = rewards + learner.config.gamma * (1 - terminals) * next_q.max(axis=1)
    err = y - q[np.arange(len(actions)), actions]
    if learner.config.loss == "huber":
        a = np.abs(err)
        per_sample = np.where(a <= 1, 0.5 * err**2, a - 0.5)
    else:
        per_sample = 0.5 * err**2
    return float(np.mean(per_sample))  # what an update reports, whatever the reduction


def test_compiled_update_uses_the_current_target_network() -> None:
    """The target network is compile state: changing it between calls changes the loss."""
    mx.random.seed(0)
    cfg = dataclasses.replace(NATURE2015, network="nips2013", target_update_agent_steps=1000)
    learner = Learner(cfg, 3, compute=COMPUTE)
    rng = np.random.default_rng(0)
    assert learner.target is not None
    # Move the target away from the online network, then check the compiled loss follows it.
    learner.target.update(tree_map(lambda p: p * 1.5 + 0.01, learner.target.parameters()))
    batch = _batch(rng)
    expected = _expected_loss(learner, learner.target, batch)
    assert learner.update(*batch).loss == pytest.approx(expected, rel=1e-4)
    batch = _batch(rng)
    learner.sync_target()
    expected = _expected_loss(learner, learner.online, batch)
    assert learner.update(*batch).loss == pytest.approx(expected, rel=1e-4)


def test_without_target_network_the_previous_parameters_give_the_target() -> None:
    mx.random.seed(1)
    learner = Learner(NIPS2013, 3, compute=COMPUTE)
    assert learner.target is None
    rng = np.random.default_rng(1)
    for _ in range(2):
        batch = _batch(rng)
        expected = _expected_loss(learner, learner.online, batch)  # theta_{i-1}
        assert learner.update(*batch).loss == pytest.approx(expected, rel=1e-4)


def test_target_sync_is_due_every_period_agent_steps_not_updates() -> None:
    """DeepMind's code syncs every ``target_q`` actions (``numSteps``), so with an update per 4
    agent steps the Nature period of 10,000 is 2,500 updates, not 10,000."""
    cfg = dataclasses.replace(NATURE2015, network="nips2013", target_update_agent_steps=12)
    assert cfg.update_period == 4
    due = [step for step in range(1, 50) if Schedule.of(cfg).syncs_target_at(step)]
    assert due == [12, 24, 36, 48]
    assert not Schedule.of(NIPS2013).syncs_target_at(10_000)  # no target network in 2013
    assert Learner(NIPS2013, 3, compute=COMPUTE).target is None


def test_updates_alone_never_sync_the_target() -> None:
    """The sync is the training loop's, on agent steps: updates leave theta^- alone."""
    mx.random.seed(2)
    cfg = dataclasses.replace(NATURE2015, network="nips2013", target_update_agent_steps=3)
    learner = Learner(cfg, 3, compute=COMPUTE)
    rng = np.random.default_rng(2)
    assert learner.target is not None

    def same() -> bool:
        a = dict(tree_flatten(learner.online.parameters()))
        b = dict(tree_flatten(learner.target.parameters()))  # type: ignore[union-attr]
        return all(np.array_equal(np.array(a[k]), np.array(b[k])) for k in a)

    for _ in range(4):
        learner.update(*_batch(rng))
    assert not same()
    learner.sync_target()
    assert same()


def test_updates_descend_the_loss_on_a_fixed_batch() -> None:
    mx.random.seed(3)
    cfg = dataclasses.replace(NATURE2015, network="nips2013", learning_rate=1e-3)
    learner = Learner(cfg, 3, compute=COMPUTE)
    batch = _batch(np.random.default_rng(3))
    first = learner.update(*batch).loss
    for _ in range(30):
        last = learner.update(*batch).loss
    assert last < 0.5 * first


def test_compiled_rmsprop_matches_numpy_over_several_steps() -> None:
    """The fused, compiled optimizer keeps g and g2 apart and follows the formula each step."""
    opt = CenteredRMSProp(0.1, grad_decay=0.9, sq_decay=0.8, min_sq=0.01)
    params = {"w": mx.array([1.0, -2.0, 0.5])}
    opt.init(params)
    state = [opt.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(grads: dict, current: dict) -> dict:
        return opt.apply_gradients(grads, current)

    w, g, g2 = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.zeros(3)
    for grad in ([0.5, -1.0, 0.0], [0.1, 0.3, -2.0], [-0.4, 0.2, 1.0]):
        params = step({"w": mx.array(grad)}, params)
        mx.eval(params, state)
        grad_np = np.array(grad)
        g = 0.9 * g + 0.1 * grad_np
        g2 = 0.8 * g2 + 0.2 * grad_np**2
        w = w - 0.1 * grad_np / np.sqrt(g2 - g**2 + 0.01)
        assert np.allclose(np.array(params["w"]), w, atol=1e-5)


def test_adam_matches_pytorch_adam_with_bias_correction() -> None:
    """The laptop preset's optimizer is CleanRL's torch.optim.Adam: bias-corrected moments
    (MLX's Adam leaves bias correction off unless asked)."""
    cfg = dataclasses.replace(LAPTOP, learning_rate=0.1, adam_eps=1e-8)
    opt = make_optimizer(cfg)
    params = {"w": mx.array([1.0, -2.0, 0.5])}
    opt.init(params)
    w, m, v = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.zeros(3)
    for t, grad in enumerate(([0.5, -1.0, 0.0], [0.1, 0.3, -2.0], [-0.4, 0.2, 1.0]), 1):
        params = opt.apply_gradients({"w": mx.array(grad)}, params)
        g = np.array(grad)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        w = w - 0.1 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        assert np.allclose(np.array(params["w"]), w, atol=1e-5)


def test_laptop_update_descends_the_mean_loss() -> None:
    mx.random.seed(4)
    learner = Learner(
        dataclasses.replace(LAPTOP, network="nips2013", learning_rate=1e-3), 3, compute=COMPUTE
    )
    batch = _batch(np.random.default_rng(4))
    expected = _expected_loss(learner, learner.target, batch)
    first = learner.update(*batch).loss
    assert first == pytest.approx(expected, rel=1e-4)
    for _ in range(30):
        last = learner.update(*batch).loss
    assert last < 0.5 * first

"""PyTorch CPU reference for `main.py --mode bench`: the same Nature network, batch and
optimizer, and a plain DQN loop of the same shape (one env, one update per 4 agent steps).

PyTorch is not a dependency of dqn-mlx. Run this in a scratch environment, e.g.:

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 numpy ale-py gymnasium
    /tmp/torchenv/bin/python benchmarks/torch_reference.py

It prints `name value unit` lines like the MLX benchmark, so the two can be read side by side.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from ale_py.vector_env import AtariVectorEnv
from torch import nn


def nature_network(actions: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(4, 32, 8, stride=4),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3136, 512),
        nn.ReLU(),
        nn.Linear(512, actions),
    )


class Learner:
    def __init__(self, actions: int):
        self.online, self.target = nature_network(actions), nature_network(actions)
        self.target.load_state_dict(self.online.state_dict())
        self.opt = torch.optim.RMSprop(
            self.online.parameters(), lr=2.5e-4, alpha=0.95, eps=0.01, centered=True
        )

    def update(
        self, s: np.ndarray, a: np.ndarray, r: np.ndarray, s2: np.ndarray, d: np.ndarray
    ) -> float:
        s_t = torch.from_numpy(s).float().div_(255)
        s2_t = torch.from_numpy(s2).float().div_(255)
        with torch.no_grad():
            y = torch.from_numpy(r) + 0.99 * (1 - torch.from_numpy(d)) * self.target(s2_t).max(1)[0]
        q = self.online(s_t).gather(1, torch.from_numpy(a).long()[:, None]).squeeze(1)
        loss = nn.functional.smooth_l1_loss(q, y, reduction="sum")
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()


def random_batch(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    return (
        rng.integers(0, 256, (32, 4, 84, 84), dtype=np.uint8),
        rng.integers(0, 4, 32),
        rng.standard_normal(32).astype(np.float32),
        rng.integers(0, 256, (32, 4, 84, 84), dtype=np.uint8),
        (rng.random(32) < 0.1).astype(np.float32),
    )


def update_ms(repeats: int = 30) -> float:
    learner, batch = Learner(4), random_batch(np.random.default_rng(0))
    for _ in range(5):
        learner.update(*batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        learner.update(*batch)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def loop_steps_per_s(steps: int = 2000, warmup: int = 1000) -> float:
    """A plain DQN loop: act, step, store one frame, update every 4 agent steps."""
    env = AtariVectorEnv(
        "breakout", 1, stack_num=4, reward_clipping=False, autoreset_mode="SameStep", num_threads=1
    )
    learner, rng = Learner(4), np.random.default_rng(0)
    capacity = warmup + steps + 10
    frames = np.zeros((capacity, 84, 84), np.uint8)
    actions = np.zeros(capacity, np.int64)
    rewards = np.zeros(capacity, np.float32)
    dones = np.zeros(capacity, np.float32)
    obs, _ = env.reset(seed=0)
    start = 0.0
    for t in range(warmup + steps):
        if t == warmup:
            start = time.perf_counter()
        if rng.random() < 0.1:
            action = int(rng.integers(4))
        else:
            with torch.no_grad():
                action = int(learner.online(torch.from_numpy(obs).float() / 255).argmax())
        obs, r, term, _trunc, _ = env.step(np.array([action]))
        frames[t], actions[t], rewards[t], dones[t] = (
            obs[0, -1],
            action,
            np.clip(r[0], -1, 1),
            term[0],
        )
        if t >= warmup and t % 4 == 0:
            idx = rng.integers(4, t - 1, 32)
            stack = np.stack([frames[idx - k] for k in (3, 2, 1, 0)], axis=1)
            nxt = np.stack([frames[idx + 1 - k] for k in (3, 2, 1, 0)], axis=1)
            learner.update(stack, actions[idx], rewards[idx], nxt, dones[idx])
    return steps / (time.perf_counter() - start)


if __name__ == "__main__":
    torch.manual_seed(0)
    print(f"torch_version {torch.__version__} -")
    print(f"torch_threads {torch.get_num_threads()} threads")
    print(f"torch_update_ms_nature2015 {update_ms():.1f} ms")
    print(f"torch_end_to_end_nature2015 {loop_steps_per_s():.1f} agent_steps/s")

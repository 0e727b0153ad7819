"""The papers' score tables, for the results report (``--mode report``).

Sources, the papers themselves:
- ``TABLE1_2013``: Mnih et al. 2013, "Playing Atari with Deep Reinforcement Learning", Table 1
  (rows Random, DQN, Human, DQN Best; average total reward of an epsilon=0.05 policy for a
  fixed number of steps; "Best" is the best single episode).
- ``NATURE_2015``: Mnih et al. 2015, Nature 518, Extended Data Table 2 (no-op starts; 30
  episodes of up to 5 minutes, epsilon 0.05): Random, Human, DQN mean and std.
- ``DOPAMINE_ADAM_MSE``: not a paper's table but the anchor at a laptop's budget: Dopamine's
  published training curves (google/dopamine ``baselines/atari/data/<game>.json``, agent "DQN
  (Adam + MSE in JAX)", 5 runs, sticky actions, epsilon 0.01 after 250,000 agent steps): the
  lowest and highest run's mean training return in its iteration 5, agent steps 1.25M-1.5M.
Keys are ALE ROM names.
"""

from __future__ import annotations

TABLE1_2013: dict[str, dict[str, float]] = {
    "beam_rider": {"random": 354, "dqn": 4092, "human": 7456, "dqn_best": 5184},
    "breakout": {"random": 1.2, "dqn": 168, "human": 31, "dqn_best": 225},
    "enduro": {"random": 0, "dqn": 470, "human": 368, "dqn_best": 661},
    "pong": {"random": -20.4, "dqn": 20, "human": -3, "dqn_best": 21},
    "qbert": {"random": 157, "dqn": 1952, "human": 18900, "dqn_best": 4500},
    "seaquest": {"random": 110, "dqn": 1705, "human": 28010, "dqn_best": 1740},
    "space_invaders": {"random": 179, "dqn": 581, "human": 3690, "dqn_best": 1075},
}

NATURE_2015: dict[str, dict[str, float]] = {
    "beam_rider": {"random": 363.9, "human": 5774.7, "dqn": 6846, "dqn_std": 1619},
    "breakout": {"random": 1.7, "human": 31.8, "dqn": 401.2, "dqn_std": 26.9},
    "enduro": {"random": 0.0, "human": 309.6, "dqn": 301.8, "dqn_std": 24.6},
    "pong": {"random": -20.7, "human": 9.3, "dqn": 18.9, "dqn_std": 1.3},
    "qbert": {"random": 163.9, "human": 13455, "dqn": 10596, "dqn_std": 3294},
    "seaquest": {"random": 68.4, "human": 20181.8, "dqn": 5286, "dqn_std": 1310},
    "space_invaders": {"random": 148.0, "human": 1652.3, "dqn": 1976, "dqn_std": 893},
}

DOPAMINE_WINDOW = (1_250_000, 1_500_000)  # agent steps: Dopamine's iteration 5 of 250,000

DOPAMINE_ADAM_MSE: dict[str, tuple[float, float]] = {
    "beam_rider": (4190.0, 5358.8),
    "breakout": (27.1, 28.3),
    "enduro": (547.8, 601.5),
    "pong": (-14.3, 8.0),
    "qbert": (814.2, 1172.3),
    "seaquest": (374.7, 537.0),
    "space_invaders": (539.9, 632.0),
}

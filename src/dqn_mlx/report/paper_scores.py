"""The papers' score tables, for the results report (``--mode report``).

Sources, the papers themselves:
- ``TABLE1_2013``: Mnih et al. 2013, "Playing Atari with Deep Reinforcement Learning", Table 1
  (rows Random, DQN, Human, DQN Best; average total reward of an epsilon=0.05 policy for a
  fixed number of steps; "Best" is the best single episode).
- ``NATURE_2015``: Mnih et al. 2015, Nature 518, Extended Data Table 2 (no-op starts; 30
  episodes of up to 5 minutes, epsilon 0.05): Random, Human, DQN mean and std.
- ``DOPAMINE_ADAM_MSE``: not a paper's table but the anchor at a laptop's budget: Dopamine's
  published training curves (google/dopamine ``baselines/atari/data/<game>.json``, commit
  5873f54; agent "DQN (Adam + MSE in JAX)", the setting of our ``laptop`` preset; 5 runs,
  sticky actions, epsilon 0.01 after 250,000 agent steps): per iteration of
  ``DOPAMINE_ITERATION`` agent steps, the lowest and the highest run's mean training return.
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

DOPAMINE_ITERATION = 250_000  # agent steps (1M emulator frames) behind each point of its curves

DOPAMINE_ADAM_MSE: dict[str, list[tuple[float, float]]] = {
    "beam_rider": [(358.6, 391.9), (399.1, 461.9), (505.0, 631.2), (910.7, 1303.8),
                   (3537.6, 3975.8), (4190.0, 5358.8), (4815.0, 5345.4), (5195.6, 5582.6)],
    "breakout": [(1.7, 1.9), (6.4, 6.6), (14.8, 15.6), (18.4, 20.0),
                 (22.8, 24.2), (27.1, 28.3), (30.4, 34.2), (35.0, 42.3)],
    "enduro": [(0.0, 0.0), (1.9, 22.8), (74.1, 203.4), (281.7, 400.6),
               (439.3, 515.8), (547.8, 601.5), (640.6, 706.7), (686.3, 822.1)],
    "pong": [(-20.3, -20.1), (-19.5, -17.3), (-17.4, -14.8), (-16.2, -9.5),
             (-16.1, 1.7), (-14.3, 8.0), (-10.8, 12.4), (-8.1, 13.5)],
    "qbert": [(226.5, 246.0), (431.8, 466.9), (497.4, 663.1), (680.4, 826.0),
              (719.4, 1074.9), (814.2, 1172.3), (866.4, 1269.4), (931.9, 1154.6)],
    "seaquest": [(167.5, 187.5), (278.1, 328.9), (317.2, 334.5), (323.2, 373.1),
                 (325.8, 395.8), (374.7, 537.0), (441.3, 756.7), (522.2, 823.0)],
    "space_invaders": [(158.4, 178.3), (208.6, 294.7), (324.1, 356.7), (385.1, 442.0),
                       (440.7, 564.8), (539.9, 632.0), (616.2, 692.2), (637.3, 701.2)],
}  # fmt: skip


def dopamine_range(rom: str, agent_steps: int) -> tuple[float, float] | None:
    """Dopamine's range over the iteration that ends at ``agent_steps`` (1,500,000: iteration 5,
    agent steps 1.25M-1.5M); None where it has no iteration ending there, or not this game."""
    iteration, rest = divmod(agent_steps, DOPAMINE_ITERATION)
    curve = DOPAMINE_ADAM_MSE.get(rom, [])
    if rest or not 0 < iteration <= len(curve):
        return None
    return curve[iteration - 1]

"""The algorithm of the papers, one module per stage of the data flow.

``env`` (the games and their preprocessing) -> ``game`` (the agent's state in the training
game) -> ``replay`` (the replay memory D) -> ``network`` (Q(s, a; theta)) -> ``learner`` (TD
target, loss, optimizer, the update) -> ``policy`` (epsilon-greedy) -> ``loop`` (Algorithm 1),
timed by ``schedule`` (which agent steps update, sync the target or end an epoch).
Nothing here imports ``dqn_mlx.accel``.
"""

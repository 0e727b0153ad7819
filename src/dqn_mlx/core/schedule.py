"""Algorithm 1's timing: when an agent step updates, when an update syncs the target, when an
update ends an epoch, and how many updates a run has made by a given agent step.

Every other module asks ``Schedule``: the loop (``core/loop.py``), the config's checks, the
disk estimate, the ETA and the benchmark's sizes. Nothing else counts updates, syncs or epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config imports this module to check itself
    from dqn_mlx.config import DQNConfig


@dataclass(frozen=True)
class Schedule:
    """The counts of ``DQNConfig`` that time a run, and the rules that read them.

    Agent steps are counted from 1: agent step t is the t-th action of the run (summed over the
    games with ``num_envs`` > 1). Within agent step t, Algorithm 1's order is:

    1. choose a_t (epsilon-greedy), play it, store the transition in D;
    2. update once if t > ``learning_starts`` and t - 1 is a multiple of ``update_period``:
       the updates follow agent steps 1, 1 + P, 1 + 2P, ... once random play is over, so a
       ``learning_starts`` that is not a multiple of P moves the first update to the next step
       of that grid, never the grid itself;
    3. sync theta^- <- theta if ``target_update_agent_steps`` (K) > 0 and t is a multiple of
       K. This is DeepMind's counting rule (``numSteps % target_q == 1``, ``numSteps``
       counting actions): a sync every K agent steps whatever the update period, theirs after
       agent steps 1, K + 1, ..., ours after K, 2K, ..., the copy made when the learner is
       built standing for their first;
    4. an epoch ends with update number k x ``epoch_updates`` (2013 Sec. 5.1).

    With N = ``num_envs`` games one pass of the loop is N agent steps played together; their
    updates and syncs are then made in agent-step order, and an epoch that ends within the
    pass ends after it. The run's evaluations play ``eval_steps`` agent steps each.
    """

    total_steps: int
    learning_starts: int
    update_period: int
    epoch_updates: int
    eval_steps: int
    target_update_agent_steps: int = 0
    num_envs: int = 1

    @classmethod
    def of(cls, config: DQNConfig) -> Schedule:
        return cls(config.total_steps, config.learning_starts, config.update_period,
                   config.epoch_updates, config.eval_steps, config.target_update_agent_steps,
                   config.num_envs)  # fmt: skip

    def updates_at(self, step: int) -> bool:
        """Whether agent step ``step`` is followed by an update (rule 2)."""
        return step > self.learning_starts and (step - 1) % self.update_period == 0

    def syncs_target_at(self, step: int) -> bool:
        """Whether agent step ``step`` is followed by theta^- <- theta (rule 3); never without
        a target network (K = 0, 2013)."""
        period = self.target_update_agent_steps
        return period > 0 and step % period == 0

    def ends_epoch(self, update: int) -> bool:
        """Whether update number ``update`` (counted from 1) is the last of an epoch."""
        return update % self.epoch_updates == 0

    def updates_by(self, step: int) -> int:
        """Updates made once ``step`` agent steps are done: the t in 1..step of rule 2, that is
        the multiples of ``update_period`` among learning_starts..step - 1."""
        period = self.update_period
        return max(0, (step - 1) // period - (self.learning_starts - 1) // period)

    def updates_after(self, step: int) -> bool:
        """Whether the run makes another update after agent step ``step``."""
        return self.updates_by(self.total_steps) > self.updates_by(step)

    def step_of_update(self, update: int) -> int:
        """The agent step that update number ``update`` (from 1) follows (rule 2)."""
        first = -(-self.learning_starts // self.update_period) * self.update_period + 1
        return first + (update - 1) * self.update_period

    def ends_short_epoch(self) -> bool:
        """Whether a run from its start ends with a last, shorter epoch: updates made after
        the pass that ended its last full epoch (``run.train`` saves them in one)."""
        total = self.updates_by(self.total_steps)
        full = total // self.epoch_updates * self.epoch_updates
        if full == 0:
            return total > 0
        passes = -(-self.step_of_update(full) // self.num_envs)
        return total > self.updates_by(passes * self.num_envs)

    def epoch_ends(self) -> int:
        """Epoch ends of a run from its start, the last, shorter one included."""
        full = self.updates_by(self.total_steps) // self.epoch_updates
        return full + self.ends_short_epoch()

    def evaluations_after(self, step: int) -> int:
        """Epoch ends still to come after agent step ``step`` (the end of a pass)."""
        return self.epoch_ends() - self.updates_by(step) // self.epoch_updates

    def most_updates_per_pass(self) -> int:
        """The most updates one pass of the loop (``num_envs`` agent steps) can make."""
        return -(-self.num_envs // self.update_period)

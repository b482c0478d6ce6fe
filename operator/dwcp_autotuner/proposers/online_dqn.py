"""Strategy: a DQN learning online from production verdicts alone, one parameter step at a time.

For profiles without a twin. The state is the normalised stable configuration, one action moves one
parameter by one grid step (epsilon-greedy, the epsilon schedule advancing per proposal, raised while
exploration is boosted), and every verdict is a transition. Fine-tunings are judged on held-out
production transitions.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..agent.dqn import DQNAgent
from ..agent.schedule import epsilon_at
from ..canary.protocol import canonical_json
from .base import Proposal
from .dqn_policy import DQNPolicy, first_move, normalised


class OnlineDQN(DQNPolicy):
    kind = "online"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.last_action: dict[str, int] = {}  # candidate json -> the action that proposed it

    def observation(self, config: Mapping[str, object]) -> np.ndarray:
        return normalised(self.profile, config)

    def action_for(self, stable: Mapping[str, object], proposed: Mapping[str, object]) -> int | None:
        return self.last_action.get(canonical_json(proposed)) or first_move(self.profile, stable, proposed)

    def evaluate(self, agent: DQNAgent) -> float | None:
        return self.holdout_error(agent)

    def suggest(self, stable: Mapping[str, object]) -> Proposal | None:
        params = self.profile.parameters
        if self.agent is None:
            self.agent = DQNAgent(len(params), 1 + 2 * len(params), self.settings)
        agent = self.agent
        s = self.settings
        epsilon = max(epsilon_at(self.proposals - 1, s.epsilon_start, s.epsilon_decay, s.epsilon_min), self.boost)
        # Moves that change the configuration and were not tried, in the agent's order of preference.
        q_values = agent.q_values(self.observation(stable))
        order = [int(a) for a in np.argsort(-q_values) if a != 0]
        if agent.action_rng.random() < epsilon:
            agent.action_rng.shuffle(order)
        for action in order:
            j, down = divmod(action - 1, 2)
            parameter = params[j]
            moved = parameter.move(stable[parameter.name], -1 if down else +1)
            if moved == stable[parameter.name]:
                continue
            config = dict(stable)
            config[parameter.name] = moved
            key = canonical_json(config)
            if key in self.tried:
                continue
            self.last_action[key] = action
            expected, confidence = q_estimate(q_values, action, self.learning.samples)
            return Proposal(
                config=config,
                expected_improvement_pct=expected,
                confidence=confidence,
                reason=f"{parameter.name} {'−' if down else '+'}1 step ({'explore' if epsilon > 0.5 else 'exploit'}, ε={epsilon:.2f})",
            )
        return None


def q_estimate(q_values: np.ndarray, action: int, samples: int) -> tuple[float, float]:
    """Expected improvement (Q predicts the verdict's reward, a fraction) and a confidence in [0, 1].

    The confidence is the Q-margin of the action over the no-op, in units of the spread of the
    Q-values, squashed to (0, 1) and discounted by how few production verdicts the agent has seen.
    """
    q = np.asarray(q_values, dtype=np.float64)
    spread = float(np.std(q)) + 1e-9
    margin = (float(q[action]) - float(q[0])) / spread
    certainty = 1.0 / (1.0 + np.exp(-margin))
    evidence = 1.0 - np.exp(-samples / 5.0)
    return round(float(q[action]) * 100.0, 3), round(float(certainty * evidence), 4)

"""Hyper-parameters of the DQN agent.

Every knob of the algorithm lives here, named, with the original system's defaults. The model
is embedded in the Kubernetes custom resource spec, so it validates with camelCase aliases
(``learningRate``, ``targetUpdateInterval``, ...) and also accepts the snake_case field names
from Python.

Units, because they are easy to get wrong:

* ``epsilon_decay`` multiplies epsilon once per **episode** (see `agent/schedule.py`).
* ``train_frequency`` is counted in **environment steps**: one gradient update every N steps.
* ``learning_starts`` is counted in **transitions held by the replay buffer**: no gradient update
  happens before the buffer holds that many (and at least ``batch_size``). A resumed run whose
  checkpoint carried a replay sample therefore starts updating straight away.
* ``target_update_interval`` is counted in **gradient updates** (not environment steps): every N
  updates the target network is moved towards the online network by ``tau`` (``tau = 1`` is the
  classic hard copy). With ``train_frequency = 4`` the default 500 updates is 2000 env steps.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

#: Bounds that keep a typo from allocating terabytes or training for years (the original budget is 500,000 steps).
MAX_EPISODES = 1_000_000
MAX_STEPS_PER_EPISODE = 100_000
MAX_TRAINING_STEPS = 100_000_000  # about 12 hours at the measured ~2,400 steps/s on two cores
MAX_REPLAY = 1_000_000
MAX_SEED = 2**32 - 1  # numpy and torch both take it


class AgentSettings(BaseModel):
    """DQN hyper-parameters (defaults are the original system's)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    # --- training loop -------------------------------------------------------------------------
    episodes: int = Field(1000, ge=1, le=MAX_EPISODES, description="Episodes in a full training run.")
    steps_per_episode: int = Field(
        500, ge=1, le=MAX_STEPS_PER_EPISODE, description="Environment steps per episode (truncation)."
    )
    train_frequency: int = Field(4, ge=1, description="Environment steps per gradient update.")
    learning_starts: int = Field(
        1000, ge=0, description="Transitions the replay buffer must hold before updates start."
    )

    # --- optimisation --------------------------------------------------------------------------
    learning_rate: float = Field(1e-3, gt=0, le=1, allow_inf_nan=False, description="Adam learning rate.")
    gamma: float = Field(0.95, ge=0, lt=1, description="Discount factor.")
    batch_size: int = Field(64, ge=1, description="Transitions per gradient update.")
    replay_size: int = Field(
        100_000,
        ge=1,
        le=MAX_REPLAY,
        description="Replay buffer capacity (transitions; at most 1,000,000, about 300 MB).",
    )
    max_grad_norm: float | None = Field(
        10.0, gt=0, description="Clip the global gradient L2 norm to this; null disables clipping."
    )
    double_dqn: bool = Field(True, description="Double-DQN target (online argmax, target value).")

    # --- target network ------------------------------------------------------------------------
    target_update_interval: int = Field(500, ge=1, description="Gradient updates between target-network updates.")
    tau: float = Field(1.0, gt=0, le=1, description="Target update weight: 1 = hard copy, <1 = Polyak averaging.")

    # --- network -------------------------------------------------------------------------------
    hidden_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [128, 128], min_length=1, description="Hidden layer widths (ReLU)."
    )

    # --- exploration (per-episode geometric decay) ---------------------------------------------
    epsilon_start: float = Field(1.0, ge=0, le=1, description="Epsilon in episode 0.")
    epsilon_decay: float = Field(0.995, gt=0, le=1, description="Epsilon multiplier per episode.")
    epsilon_min: float = Field(0.01, ge=0, le=1, description="Epsilon floor.")

    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seeds network init, exploration, replay sampling, resets.")

    @model_validator(mode="after")
    def _check_relations(self) -> AgentSettings:
        steps = self.episodes * self.steps_per_episode
        if steps > MAX_TRAINING_STEPS:
            raise ValueError(
                f"episodes × stepsPerEpisode = {steps:,} environment steps is more than {MAX_TRAINING_STEPS:,} "
                "(days of CPU); lower episodes or stepsPerEpisode"
            )
        if self.batch_size > self.replay_size:
            raise ValueError(
                f"batch_size (batchSize) = {self.batch_size} must not exceed "
                f"replay_size (replaySize) = {self.replay_size}"
            )
        if self.epsilon_min > self.epsilon_start:
            raise ValueError(
                f"epsilon_min (epsilonMin) = {self.epsilon_min} must not exceed "
                f"epsilon_start (epsilonStart) = {self.epsilon_start}"
            )
        return self

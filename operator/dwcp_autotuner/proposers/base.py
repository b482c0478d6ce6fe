"""The proposer interface: every hook the controller calls, declared once, with no-op defaults.

The controller (`controller/`) knows proposers only through this class; a strategy overrides what it
needs (compare Optuna's `BaseSampler`). The hooks, in the order a run calls them:

- `pretrain(profile)`: start or poll pretraining (None: nothing to pretrain);
- `propose(profile, stable)`: a configuration to canary, or a `NoProposal` saying why not; asked again before
  any other hook (its tick was lost, or the controller declined it), a proposer may give the same configuration;
- `decline(profile, config)`: the controller will not canary this proposal (it is in its rollback cooldown);
- `observe(profile, step)`: every analysed canary step's per-variant measurements;
- `learn(profile, verdict)`: how a proposal ended (promoted or rolled back) and its reward;
- `learning_status(profile)`: the counters the run shows in `status.learning`;
- `fine_tune(profile)`: the periodic retraining (`agent.fineTuneIntervalSeconds`);
- `set_exploration(profile, rate)`: raised (or restored, 0) exploration after a stagnation;
- `new_cycle(profile)`: a continuous run re-optimises (tried configurations may be good again);
- `close()`: the run is gone; stop background work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..models.profile import ParameterProfileSpec
from ..models.run import LearningStatus, StepRecord, TrainingStatus

Config = dict[str, int | float | str]


@dataclass
class Proposal:
    config: Config
    expected_improvement_pct: float | None = None
    confidence: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class NoProposal:
    """Why there is nothing to canary now: `reason` is a CamelCase condition reason, `message` one sentence.

    `final`: nothing better can be found (the run finishes, reason Converged); otherwise the run holds and
    asks again after `exploration.holdSeconds`."""

    reason: str
    message: str
    final: bool = False


@dataclass(frozen=True)
class ProposalVerdict:
    """How a canary ended, as the proposer learns it."""

    number: int
    stable: Config
    proposed: Config
    promoted: bool
    reason: str
    reward: float  # promotions: the relative improvement (0.05 = +5 %); rollbacks: a penalty
    key: str = ""  # unique per proposal (run uid / number): a verdict handed over twice is learned once


class Proposer:
    """The agent side of a run; one instance per run, keyed by profile name in every call."""

    def pretrain(self, profile_name: str, profile: ParameterProfileSpec) -> TrainingStatus | None:
        """Start or poll pretraining; None when there is nothing (left) to pretrain."""
        return None

    def propose(
        self, profile_name: str, profile: ParameterProfileSpec, stable: Mapping[str, object]
    ) -> Proposal | NoProposal | None:
        """A configuration different from `stable`, a `NoProposal` with the reason, or None (nothing to propose)."""
        raise NotImplementedError

    def decline(self, profile_name: str, profile: ParameterProfileSpec, config: Mapping[str, object]) -> None:
        """The controller will not canary `config` (rolled back within `exploration.rejectedCooldownSeconds`) and asks
        again: propose another."""

    def observe(
        self, profile_name: str, profile: ParameterProfileSpec, stable: Config, canary: Config, step: StepRecord
    ) -> None:
        """One analysed canary step: both variants' measurements (the stable one is free data, except at a weight of
        100 %, where the stable variant gets no work and its measurement is the step before's)."""

    def learn(self, profile_name: str, profile: ParameterProfileSpec, verdict: ProposalVerdict) -> None:
        """The end of a proposal. A status write that fails after it can hand the same verdict over again:
        a proposer learns each `verdict.key` once."""

    def learning_status(self, profile_name: str, profile: ParameterProfileSpec) -> LearningStatus | None:
        """What the run shows in `status.learning[profile]`; None: this proposer reports nothing."""
        return None

    def fine_tune(self, profile_name: str, profile: ParameterProfileSpec) -> str | None:
        """Periodic retraining; returns one sentence about the outcome, None when it does not fine-tune."""
        return None

    def set_exploration(self, profile_name: str, profile: ParameterProfileSpec, rate: float) -> None:
        """Raise exploration to `rate` (0: back to the proposer's own)."""

    def new_cycle(self, profile_name: str, profile: ParameterProfileSpec) -> None:
        """A continuous run re-optimises: configurations tried before may be good now."""

    def close(self) -> None:
        """The run is gone: stop background work."""

"""The learned twin and the proposer built on it (proposers/surrogate.py, proposers/learned.py)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import re

import numpy as np
import pytest

from dwcp_autotuner.canary.protocol import CANARY_KEY, ConfigRef, canonical_json
from dwcp_autotuner.controller.context import Ports, RunContext
from dwcp_autotuner.controller.run import reconcile
from dwcp_autotuner.models.profile import ParameterProfileSpec
from dwcp_autotuner.models.run import (
    ExplorationSettings,
    OptimizationRunSpec,
    RejectedConfig,
    RunAgentSettings,
    RunStatus,
    StepRecord,
    VariantMeasurement,
)
from dwcp_autotuner.ports.base import RecordingEvents
from dwcp_autotuner.ports.local import FileConfigStore, InProcessMetrics
from dwcp_autotuner.proposers.base import NoProposal, Proposal, ProposalVerdict, Proposer
from dwcp_autotuner.proposers.learned import LearnedTwinProposer
from dwcp_autotuner.proposers.pool import AgentPool
from dwcp_autotuner.proposers.store import ModelStore, model_configmap_name
from dwcp_autotuner.proposers.surrogate import LearnedTwin
from dwcp_autotuner.workloads import make_workload, twin_conditions

NS = "tuning"


def profile(name_max: int = 64, extra: dict | None = None) -> ParameterProfileSpec:
    return ParameterProfileSpec.model_validate(
        {
            "target": {"name": "svc-config"},
            "parameters": [
                {"name": "batch", "min": 1, "max": name_max, "default": 8, "scale": "log2"},
                {"name": "timeout", "min": 100, "max": 3200, "default": 400, "scale": "log2"},
            ],
            "metrics": [{"name": "score", "query": 'score{variant="{{variant}}"}'}],
            "objective": [{"metric": "score", "goal": "maximize"}],
            **(extra or {}),
        }
    )


def truth(config) -> float:
    """A smooth bowl with its top at batch 32, timeout 800."""
    return 100.0 - 8.0 * math.log2(config["batch"] / 32) ** 2 - 5.0 * math.log2(config["timeout"] / 800) ** 2


def step_record(
    stable: VariantMeasurement,
    canary: VariantMeasurement,
    index: int = 0,
    verdict: str = "Successful",
    reason: str = "NotWorse",
) -> StepRecord:
    """One analysed canary step at 5 % with the two variants measured as given."""
    return StepRecord(
        index=index,
        weight=5,
        analysed_at="2026-12-01T00:00:00Z",
        verdict=verdict,
        reason=reason,
        stable=stable,
        canary=canary,
    )


def step(stable: dict, canary: dict, index: int = 0) -> StepRecord:
    def measured(config):
        return VariantMeasurement(score=truth(config), score_std=1.0, n=10, metrics={"score": truth(config)})

    return step_record(measured(stable), measured(canary), index)


_keys = itertools.count(1)


def verdict(stable, proposed, promoted: bool) -> ProposalVerdict:
    n = next(_keys)
    return ProposalVerdict(
        number=n,
        stable=dict(stable),
        proposed=dict(proposed),
        promoted=promoted,
        reason="CanaryBetter" if promoted else "CanaryWorse",
        reward=0.05 if promoted else -0.05,
        key=f"uid/{n}",
    )


def settings(**extra) -> RunAgentSettings:
    return RunAgentSettings.model_validate(
        {"seed": 1, "batchSize": 8, "hiddenSizes": [16], "planningUpdates": 20, "persistModel": True, **extra}
    )


def test_the_learned_twins_uncertainty_shrinks_where_it_measured():
    space = profile().tuning_space()
    twin = LearnedTwin(space)
    here, far = {"batch": 8, "timeout": 400}, {"batch": 64, "timeout": 3200}
    twin.add({"batch": 4, "timeout": 400}, 90.0, 1.0, 10)
    before_here, before_far = twin.predict([twin.index_of(here), twin.index_of(far)])[1]
    for _ in range(3):
        twin.add(here, 95.0, 1.0, 10)
    mean, sd = twin.predict([twin.index_of(here), twin.index_of(far)])
    assert sd[0] < before_here / 3  # measured there: little doubt left
    assert sd[1] > 5 * sd[0]  # never measured far away: still uncertain
    assert mean[0] == pytest.approx(95.0, abs=1.0)


def test_an_effect_measured_at_one_setting_of_the_others_carries_to_nearby_settings_not_to_far_ones():
    """Without a prior, doubling the batch cost 30 points at timeout 100: the twin expects most of that loss at
    timeout 200 and little of it at 3200, where nothing says the batch matters the same way (HDE's best window
    grows with the chunk size; ACP's best quorum depends on the timeout)."""
    space = profile().tuning_space()
    twin = LearnedTwin(space)
    for (batch, timeout), score in (((8, 100), 90.0), ((16, 100), 60.0), ((8, 200), 88.0), ((8, 3200), 90.0)):
        twin.add({"batch": batch, "timeout": timeout}, score, 1.0, 10)
    points = [(8, 200), (16, 200), (8, 3200), (16, 3200)]
    mean, _ = twin.predict([twin.index_of({"batch": b, "timeout": t}) for b, t in points])
    near, far = mean[1] - mean[0], mean[3] - mean[2]
    assert near < -0.6 * 30.0  # most of the measured loss, next to where it was measured
    assert abs(far) < 0.3 * abs(near)  # far less of it far away


def test_five_alike_measurements_around_one_point_leave_the_far_corners_uncertain():
    """Without a prior, five canaries within a step of the default that scored within ±1 % say nothing about the
    far corners of the grid: fitted on so few points the kernel's amplitude fell to their spread (±5 % everywhere)
    and the proposer stopped, sure that nothing was better (ACP, seven of 32 runs of bench/live_tuning.py)."""
    space = profile().tuning_space()
    twin = LearnedTwin(space)
    for (batch, timeout), score in (
        ((8, 400), 90.0),
        ((16, 400), 91.0),
        ((4, 400), 89.0),
        ((8, 800), 90.5),
        ((8, 200), 89.5),
    ):
        twin.add({"batch": batch, "timeout": timeout}, score, 1.0, 10)
    mean, sd = twin.predict(
        [twin.index_of({"batch": 64, "timeout": 3200}), twin.index_of({"batch": 1, "timeout": 100})]
    )
    assert np.all(sd / mean > 0.2)


def test_each_canaried_configuration_checks_the_twins_prediction_there_and_status_sums_the_checks_up():
    """The prediction made when a configuration was chosen meets its first measurement: a measurement far outside
    the predicted spread raises `calibration` above 1; a re-measurement, or a point nobody predicted, adds no check."""
    space = profile().tuning_space()
    twin = LearnedTwin(space)
    for config, score in (({"batch": 8, "timeout": 400}, 90.0), ({"batch": 16, "timeout": 400}, 92.0)):
        twin.add(config, score, 1.0, 10)
    assert twin.calibration is None
    near, far = {"batch": 16, "timeout": 800}, {"batch": 64, "timeout": 3200}
    for config in (near, far):
        twin.expect(twin.index_of(config))
    (mean_near, mean_far), (sd_near, sd_far) = twin.predict([twin.index_of(near), twin.index_of(far)])
    twin.add(near, float(mean_near), 1.0, 10)  # as predicted: a surprise near 0
    assert len(twin.surprises) == 1 and abs(twin.surprises[0]) < 0.2
    twin.add(near, float(mean_near) * 2, 1.0, 10)  # the same configuration again: not a new check
    twin.add({"batch": 1, "timeout": 100}, 1.0, 1.0, 10)  # nobody predicted it: no check
    assert len(twin.surprises) == 1
    twin.add(far, float(mean_far) + 8 * float(sd_far) + 1.0, 1.0, 10)  # far outside what was predicted
    assert len(twin.surprises) == 2 and twin.surprises[1] > 3
    assert twin.calibration > 2
    restored = LearnedTwin(space)
    restored.restore(twin.state())
    assert restored.surprises == twin.surprises and restored.calibration == twin.calibration

    prof = profile()
    proposer = LearnedTwinProposer(settings(), planner="none", deterministic=True)
    _, proposals = _drive(proposer, prof, 5)
    learning = proposer.learning_status("svc", prof)
    # The first proposal (nothing measured) predicts nothing; each later one is checked by its own measurement,
    # where that can be said in the units of the prediction (a log scale while every score seen was positive).
    checkable = [p for _, p in proposals[1:] if truth(p.config) > 0]
    assert learning.prediction_checks == len(checkable) >= 3
    assert learning.calibration > 0
    assert learning.calibration == pytest.approx(proposer._state("svc", prof).twin.calibration, abs=1e-3)


def _drive(proposer: Proposer, prof: ParameterProfileSpec, canaries: int):
    """Propose, measure, decide as the controller would (promote when truly better), `canaries` times."""
    stable = prof.default_config()
    proposals = []
    for _ in range(canaries):
        proposal = proposer.propose("svc", prof, stable)
        if not isinstance(proposal, Proposal):
            break
        proposals.append((dict(stable), proposal))
        proposer.observe("svc", prof, stable, proposal.config, step(stable, proposal.config))
        better = truth(proposal.config) > truth(stable) * 1.01
        proposer.learn("svc", prof, verdict(stable, proposal.config, better))
        if better:
            stable = dict(proposal.config)
    return stable, proposals


def test_a_candidate_whose_pessimistic_bound_is_not_safe_is_never_canaried():
    prof = profile()
    margin = 25.0
    proposer = LearnedTwinProposer(
        settings(), exploration=ExplorationSettings(safety_margin_pct=margin), planner="none", deterministic=True
    )
    checked = 0
    original = proposer._choose

    def choose(state, prof_, stable):
        result = original(state, prof_, stable)
        if isinstance(result, Proposal) and state.twin.observations:
            nonlocal checked
            a = proposer._assess(
                state, prof_, np.array([state.twin.index_of(result.config)]), state.twin.index_of(stable)
            )
            assert a.pessimistic[0] >= a.stable * (1 - margin / 100) - 1e-9, (result, a.pessimistic, a.stable)
            checked += 1
        return result

    proposer._choose = choose
    final, _ = _drive(proposer, prof, 15)
    assert checked >= 3
    assert truth(final) > truth(prof.default_config())


def test_a_hold_carries_its_reason_and_the_run_asks_again_only_after_hold_seconds(tmp_path):
    class Holding(Proposer):
        asked = 0

        def propose(self, name, prof, stable):
            Holding.asked += 1
            return NoProposal("NothingSafe", "the best candidate's pessimistic bound is 12 % below the stable score")

    store = FileConfigStore(tmp_path)
    store.put(NS, "svc-config", {"config.json": canonical_json(profile().default_config())})
    spec = OptimizationRunSpec.model_validate(
        {
            "profiles": ["svc"],
            "budget": {"maxProposals": 5},
            "exploration": {"holdSeconds": 600},
            "rollout": {"analysisIntervalSeconds": 60, "minSamples": 5},
        }
    )
    status, now, events = RunStatus(), dt.datetime(2026, 12, 1, tzinfo=dt.UTC), RecordingEvents()
    for _ in range(16):  # three ticks to the first proposal, a hold of ten ticks, one more proposal
        now += dt.timedelta(seconds=61)
        status = reconcile(
            RunContext("run", NS, "uid", 1, spec, status, {"svc": profile()}, now),
            Ports(store, InProcessMetrics(), events, Holding()),
        )
    progressing = next(c for c in status.conditions if c.type == "Progressing")
    assert progressing.reason == "Holding" and "NothingSafe" in progressing.message and "12 %" in progressing.message
    assert status.holds["svc"].reason == "NothingSafe" and status.phase == "Proposing"
    assert Holding.asked == 2  # once, then again when the 600 s hold expired (ticks of 61 s)
    assert [h.reason for h in status.history] == ["NothingSafe", "NothingSafe"]
    assert sum(1 for e in events.events if e[1] == "Holding") == 1  # one Event while the hold lasts


def test_the_planner_learns_from_the_first_verdict_and_the_stored_model_says_so(tmp_path):
    prof = profile()
    models = ModelStore(FileConfigStore(tmp_path), NS)
    proposer = LearnedTwinProposer(settings(), models=models, deterministic=True)
    _drive(proposer, prof, 1)
    learning = proposer.learning_status("svc", prof)
    assert learning.gradient_updates > 0 and learning.observations == 2 and learning.samples == 1
    stored = models.load(model_configmap_name("svc"), profile_hash=prof.space_hash())
    assert stored.gradient_updates == learning.gradient_updates and stored.normalisation["kind"] == "learned-twin"


def test_a_profile_of_seven_parameters_is_tuned_where_the_trust_region_is_too_large_to_screen_every_point():
    """Where the trust region holds more grid points than `MAX_CANDIDATES` (seven parameters, ±2 steps: 5⁷), the
    screened candidates are a sample and the DQN's rollout adds the points it visits. Joining the two lost the
    safety floor and margin (83227bb, 4ce972c), so every such proposal raised TypeError: a run of a profile with
    seven parameters or more was Degraded (InternalError) from its second proposal on, for good."""
    prof = ParameterProfileSpec.model_validate(
        {
            "target": {"name": "svc-config"},
            "parameters": [{"name": f"p{i}", "min": 1, "max": 64, "default": 8, "scale": "log2"} for i in range(7)],
            "metrics": [{"name": "score", "query": 'score{variant="{{variant}}"}'}],
            "objective": [{"metric": "score", "goal": "maximize"}],
        }
    )

    def bowl(config) -> float:  # its top at 4 (even parameters) and 16 (odd ones)
        return 100.0 - sum(3.0 * math.log2(config[f"p{i}"] / (16 if i % 2 else 4)) ** 2 for i in range(7))

    proposer = LearnedTwinProposer(settings(), deterministic=True)
    stable, reasons = prof.default_config(), []
    for _ in range(6):
        proposal = proposer.propose("svc", prof, stable)
        assert isinstance(proposal, Proposal), proposal
        reasons.append(proposal.reason)
        proposer.observe(
            "svc", prof, stable, proposal.config, step_record(_measured(bowl(stable)), _measured(bowl(proposal.config)))
        )
        better = bowl(proposal.config) > bowl(stable) * 1.01
        proposer.learn("svc", prof, verdict(stable, proposal.config, better))
        stable = dict(proposal.config) if better else stable
    sampled = [r for r in reasons if re.search(r"outside the \d+ candidates screened directly", r)]
    assert sampled, reasons  # a proposal that only the rollout found: the joined assessment was used
    assert bowl(stable) > bowl(prof.default_config())


def test_an_operator_restart_resumes_the_same_learned_twin(tmp_path):
    prof = profile()
    store = FileConfigStore(tmp_path)
    first = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)
    _drive(first, prof, 4)
    second = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)  # a new process
    points = [(i, j) for i in range(7) for j in range(6)]
    a = first._state("svc", prof)
    b = second._state("svc", prof)
    assert second.learning_status("svc", prof).warm_start == "Loaded"
    assert b.twin.size == a.twin.size and b.radius == a.radius and b.learned == a.learned
    assert np.allclose(a.twin.predict(points)[0], b.twin.predict(points)[0])
    assert np.allclose(a.twin.predict(points)[1], b.twin.predict(points)[1])


def test_a_similar_stored_model_is_the_prior_of_a_profile_without_one_and_the_status_says_so(tmp_path):
    store = FileConfigStore(tmp_path)
    learned = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)
    _drive(learned, profile(), 6)  # profile "svc" learns and stores its twin (and the index records it)
    # Another profile, with other bounds (a wider batch), the same parameter names and types: transfer.
    other = profile(name_max=128)
    fresh = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)
    learning = fresh.learning_status("other", other)
    assert learning.prior.startswith("similar model svc-model") and "profile svc" in learning.prior
    state = fresh._state("other", other)
    top = state.twin.config_at(max(itertools.product(range(8), range(6)), key=lambda i: state.twin.predict([i])[0][0]))
    assert abs(math.log2(top["batch"] / 32)) <= 1  # what svc learned about batch carries over
    # A profile of other parameters finds nothing similar.
    unrelated = ParameterProfileSpec.model_validate(
        {**profile().dump(), "parameters": [{"name": "workers", "min": 1, "max": 16, "default": 2, "scale": "log2"}]}
    )
    assert fresh.learning_status("unrelated", unrelated).prior == "none"


def test_a_profile_that_gained_a_choice_is_tuned_without_its_earlier_model_as_the_prior(tmp_path):
    """A stored model is "similar" by its parameters' names and types, so a profile that gained a choice value (a
    codec) finds its own earlier model. That model has no value to map the new choice to: used as the prior, every
    proposal raised ValueError, and the run was Degraded (InternalError) for good. It is left out instead; a model
    whose choices include the profile's is still used."""

    def with_codecs(*codecs: str) -> ParameterProfileSpec:
        codec = {"name": "codec", "type": "choice", "choices": list(codecs), "default": "zstd"}
        return ParameterProfileSpec.model_validate(
            {**profile().dump(), "parameters": [codec, *profile().dump()["parameters"]]}
        )

    store = FileConfigStore(tmp_path)
    before = with_codecs("zstd", "lz4", "snappy")
    first = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)
    stable = before.default_config()
    for score in (90.0, 92.0, 95.0):
        proposal = first.propose("svc", before, stable)
        first.observe("svc", before, stable, proposal.config, step_record(_measured(100.0), _measured(score)))
        first.learn("svc", before, verdict(stable, proposal.config, False))
    # Each run stores its own model in the end, which the next finds: first a subset of the codecs, then a new one.
    for after, borrowed in ((with_codecs("zstd", "snappy"), True), (with_codecs("zstd", "lz4", "brotli"), False)):
        proposer = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)
        for _ in range(3):
            proposal = proposer.propose("svc", after, after.default_config())  # raised ValueError before
            if isinstance(proposal, NoProposal):
                break
            canary = step_record(_measured(100.0), _measured(97.0))
            proposer.observe("svc", after, after.default_config(), proposal.config, canary)
            proposer.learn("svc", after, verdict(after.default_config(), proposal.config, False))
        assert proposer.learning_status("svc", after).prior.startswith("similar model") is borrowed


def _grid_truth(prof: ParameterProfileSpec, factor: float = 1.0):
    """`truth` over a profile's grid indices, times `factor`: a prior mean as a measured twin would give it."""
    bowl = _bowl(prof, 32, 800)  # `truth`'s top
    return lambda indices: bowl(indices) * factor


def test_with_a_prior_and_nothing_measured_yet_the_first_proposal_follows_the_prior_whatever_the_scores_magnitude():
    # Scores below 1 (an accuracy, a fraction): the prior's uncertainty must be relative to them, not one unit.
    prof = profile()
    for factor in (0.008, 1.0, 1000.0):
        proposer = LearnedTwinProposer(
            settings(), prior_twins={"svc": (_grid_truth(prof, factor), "truth")}, planner="none", deterministic=True
        )
        proposal = proposer.propose("svc", prof, prof.default_config())
        assert isinstance(proposal, Proposal), (factor, proposal)
        assert truth(proposal.config) > truth(prof.default_config())  # uphill on the prior
        assert proposer.learning_status("svc", prof).prior == "truth"


def test_a_positive_score_is_modelled_on_a_log_scale_and_a_signed_one_is_not():
    space = profile().tuning_space()
    positive, signed = LearnedTwin(space), LearnedTwin(space)
    points = [{"batch": b, "timeout": t} for b in (1, 8, 64) for t in (100, 800, 3200)]
    for config in points:
        value = truth(config)
        positive.add(config, math.exp(value / 100.0), 0.01 * math.exp(value / 100.0), 10)  # spans a factor of ~12
        signed.add(config, value - 80.0, 0.5, 10)  # below zero at the corners
    for twin, values in (
        (positive, [math.exp(truth(c) / 100.0) for c in points]),
        (signed, [truth(c) - 80.0 for c in points]),
    ):
        mean, _ = twin.predict([twin.index_of(c) for c in points])
        assert np.allclose(mean, values, rtol=0.05, atol=0.05)
    assert positive.log and not signed.log


def test_a_score_too_large_to_be_a_measurement_is_not_modelled_and_the_twin_goes_on():
    """A broken query's 1e300 as the first measurement set the twin's scale, and every later measurement's variance
    floor (a fraction of scale²) overflowed: every later `add` (each analysed canary step) raised OverflowError."""
    space = profile().tuning_space()
    twin = LearnedTwin(space)
    points = [{"batch": b, "timeout": 800} for b in (1, 8, 64)]
    twin.add(points[0], 1e300, 1e299, 10)
    twin.add(points[1], -1e301, 1.0, 10)
    for config in points:
        twin.add(config, truth(config), 0.5, 10)
    assert twin.size == 3 and twin.scale == abs(truth(points[0]))
    mean, sd = twin.predict([twin.index_of(c) for c in points])
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(sd))
    assert np.allclose(mean, [truth(c) for c in points], rtol=0.05)


def _bowl(prof: ParameterProfileSpec, batch: float, timeout: float):
    """A prior mean over the profile's grid like `truth`, with its top at (batch, timeout)."""
    grids = [p.grid() for p in prof.parameters]

    def prior(indices):
        rows = [{p.name: g[int(i)] for p, g, i in zip(prof.parameters, grids, row)} for row in np.asarray(indices)]
        return np.array(
            [
                100.0 - 8.0 * math.log2(r["batch"] / batch) ** 2 - 5.0 * math.log2(r["timeout"] / timeout) ** 2
                for r in rows
            ]
        )

    return prior


def _bowl_twin(prof: ParameterProfileSpec, batch: float, timeout: float):
    """A measured twin (one metric, `score`) whose score is `_bowl(prof, batch, timeout)`."""
    from dwcp_autotuner.env.twin import Twin

    space = prof.tuning_space()
    shape = tuple(len(p.grid()) for p in space.parameters)
    grid = np.array(list(itertools.product(*(range(n) for n in shape))))
    means = _bowl(prof, batch, timeout)(grid).reshape(*shape, 1)
    return Twin(space, ("score",), means, np.zeros(1), {"workload": "acp"})


def _first_proposal(prof: ParameterProfileSpec, twin) -> Proposal:
    """The first proposal from the default configuration, with `twin` as the profile's measured twin."""
    proposer = LearnedTwinProposer(settings(), prior_twins={"svc": twin}, planner="none", deterministic=True)
    proposal = proposer.propose("svc", prof, prof.default_config())
    assert isinstance(proposal, Proposal), proposal
    return proposal


def test_the_measured_twins_optimum_is_a_candidate_beyond_the_trust_region():
    # The twin's top (batch 64, timeout 3200) lies three steps from the default (8, 400) in each parameter; the trust
    # region with a twin reaches two. Before, the first proposal was the best point within reach, (32, 1600), and
    # the run reached the optimum only if its later jumps happened to head there.
    prof = profile()
    proposal = _first_proposal(prof, _bowl_twin(prof, 64, 3200))
    assert proposal.config == {"batch": 64, "timeout": 3200}
    assert "the measured twin's optimum, beyond ±2 step(s)" in proposal.reason


def test_a_twins_top_that_is_a_plateau_of_equal_scores_adds_no_candidate_beyond_the_trust_region():
    # A score that saturates (a link-limited throughput) ties at its top: which tied point is the argmax is the
    # grid's order, not a measurement. Here the first in that order, (1, 3200), lies beyond the trust region and
    # an equal one, (2, 1600), within it: the proposal stays within reach.
    from dwcp_autotuner.env.twin import Twin

    prof = profile()
    twin = _bowl_twin(prof, 2, 1600)
    means = twin.means.copy()
    top = twin.index_of({"batch": 2, "timeout": 1600})
    means[twin.index_of({"batch": 1, "timeout": 3200})] = means[top]
    proposal = _first_proposal(prof, Twin(twin.space, twin.metric_names, means, twin.noise_cv, twin.provenance))
    assert proposal.config == {"batch": 2, "timeout": 1600}
    assert "within ±2 step(s)" in proposal.reason


def test_a_twin_family_is_weighed_by_the_canaries_and_the_model_follows_the_condition_that_explains_them():
    # The twinned conditions put the top at batch 4, timeout 200; live, it is at 32, 800 (`truth`), as the twin
    # measured under another condition says. A rescaled nominal twin with a smooth misfit cannot follow that.
    prof = profile()
    space = prof.tuning_space()
    alone = LearnedTwin(space, _bowl(prof, 4, 200), "measured twin")
    family = LearnedTwin(space, _bowl(prof, 4, 200), "measured twin")
    family.add_condition("load=2", _bowl(prof, 32, 800), {})
    family.add_condition("load=0.5", _bowl(prof, 1, 3200), {})
    measured = [{"batch": b, "timeout": t} for b, t in ((8, 400), (16, 400), (8, 800), (4, 200))]
    for twin in (alone, family):
        for config in measured:
            twin.add(config, truth(config), 0.5, 10)
    top = {"batch": 32, "timeout": 800}
    (with_family,), _ = family.predict([family.index_of(top)])
    (without,), _ = alone.predict([alone.index_of(top)])
    assert family.weights["load=2"] > 0.8 > family.weights["the default conditions"]
    assert family.resembles.startswith("load=2 (weight") and alone.resembles is None
    assert abs(with_family - truth(top)) < 0.15 * truth(top) < abs(without - truth(top))
    # The mixture's expectations: its mean is the weighted mean of its members'.
    parts = family.mixture([family.index_of(top)])
    assert sum(w for w, _, _ in parts) == pytest.approx(1.0)
    (mean,), _ = family.predict_working([family.index_of(top)])
    assert mean == pytest.approx(sum(w * m[0] for w, m, _ in parts))
    # A new cycle forgets the measurements and what was fitted on them: the family is weighed anew.
    family.forget_measurements()
    assert family.size == 0 and family.resembles is None and len(family.mixture([family.index_of(top)])) == 1
    fresh = LearnedTwin(space, _bowl(prof, 4, 200), "measured twin")
    assert np.allclose(family.predict([family.index_of(top)])[0], fresh.predict([fresh.index_of(top)])[0])


def test_the_twin_is_also_measured_under_other_conditions_and_the_status_says_which_the_canaries_resemble():
    prof = ParameterProfileSpec.model_validate({**profile().dump(), "twin": "acp"})
    asked = []

    def source(name, spec, conditions=None):
        asked.append(conditions)
        if conditions == {"loss": 0.0016}:
            raise RuntimeError("no such loss rate")
        if conditions == {"arrival_rps": 250.0}:
            return _bowl_twin(prof, 32, 800)  # what the live system does (`truth`)
        return _bowl_twin(prof, 4, 200)

    proposer = LearnedTwinProposer(settings(), twin_source=source, planner="none", deterministic=True)
    first = proposer.pretrain("svc", prof)
    assert first.episodes_total == 1  # the run waits for the twin only; the other conditions follow meanwhile
    proposer._state("svc", prof).pretraining.join(30)
    progress = proposer.pretrain("svc", prof)
    conditions = twin_conditions("acp")
    assert asked == [None, *conditions]
    assert progress.episodes == progress.episodes_total == 1 and not progress.failed
    assert f"measuring it under {len(conditions)} other conditions" in progress.message
    state = proposer._state("svc", prof)
    assert len(state.twin.family) == len(conditions)  # the default conditions, and every other but the failed one
    learning = proposer.learning_status("svc", prof)
    assert learning.twin_conditions == len(conditions) and learning.resembles is None  # nothing measured live yet
    assert learning.twin_condition_failures == ["loss=0.0016: RuntimeError: no such loss rate"]
    stable = prof.default_config()
    for i, (batch, timeout) in enumerate(((16, 400), (8, 800), (4, 200), (16, 800))):
        config = {"batch": batch, "timeout": timeout}
        proposer.observe("svc", prof, stable, config, step(stable, config, i))
    proposal = proposer.propose("svc", prof, stable)
    assert proposer.learning_status("svc", prof).resembles.startswith("arrival_rps=250 (weight")
    # Straight to the live top (the nominal twin alone, rescaled, proposes batch 32, timeout 1600 here).
    assert proposal.config == {"batch": 32, "timeout": 800}


def test_twin_conditions_vary_each_condition_option_alone_inside_its_range():
    for name in ("hde", "pba", "acp"):
        defaults = make_workload(name, quick=True).options()
        variations = twin_conditions(name)
        assert len(variations) >= 2 * len({option for v in variations for option in v})
        for conditions in variations:
            ((option, value),) = conditions.items()
            assert value != defaults[option] and type(value) is type(defaults[option])
            make_workload(name, quick=True, **conditions)  # a valid option value (the constructor checks)
    hde = twin_conditions("hde")
    assert {"dirty_fraction": 1.0} in hde and {"dirty_fraction": 0.18} in hde  # 0.45 × 2.5 and × 6.25 stop at 1
    assert {"link_mbps": 625.0} in hde and {"link_mbps": 16.0} in hde


def test_the_harm_cost_is_three_with_a_measured_twin_and_one_without_unless_the_run_sets_it():
    # The measured twin's predictions hold (bench/live_tuning.py: calibration 0.2-1.3), so a canary the twin
    # expects to be worse costs more by default; without a twin the learned twin is overconfident.
    prof = profile()
    twin = _bowl_twin(prof, 32, 800)

    def cost(**kwargs) -> float:
        proposer = LearnedTwinProposer(settings(), planner="none", deterministic=True, **kwargs)
        return proposer._harm_cost(proposer._state("svc", prof))

    assert cost(prior_twins={"svc": twin}) == 3.0 and cost() == 1.0
    caller = LearnedTwinProposer(
        settings(), prior_twins={"svc": (_grid_truth(prof), "a caller's prior")}, planner="none", deterministic=True
    )
    assert caller.learning_status("svc", prof).twin_conditions is None  # a prior, but no measured twin
    assert cost(prior_twins={"svc": (_grid_truth(prof), "a caller's prior")}) == 1.0  # not a measured twin
    explicit = ExplorationSettings.model_validate({"harmCostPct": 0.5})
    assert cost(prior_twins={"svc": twin}, exploration=explicit) == cost(exploration=explicit) == 0.5


def test_at_full_weight_the_stable_measurement_of_the_step_before_is_not_learned_twice():
    """At 100 % the stable variant gets no work: the step's stable measurement is the step before's (the
    controller reaches back for it), so the learned twin adds the canary's new samples and not that one again."""
    prof = profile()
    proposer = LearnedTwinProposer(settings(), planner="none", deterministic=True)
    stable, canary = {"batch": 8, "timeout": 400}, {"batch": 16, "timeout": 400}
    for index, weight in enumerate((5, 25, 50, 100)):
        record = step(stable, canary, index)
        record.weight = weight
        proposer.observe("svc", prof, stable, canary, record)
    twin = proposer._state("svc", prof).twin
    counts = [sum(o.index == twin.index_of(config) for o in twin.observations) for config in (stable, canary)]
    assert counts == [3, 4]


@pytest.mark.parametrize("twin", [False, True], ids=["without a twin", "with a measured twin"])
def test_an_inconclusive_canary_that_measured_worse_raises_the_harm_cost_as_a_worse_one_or_more_with_a_twin(twin):
    """A canary rolled back as inconclusive after measuring better (within noise) says its neighbourhood is flat;
    one that measured worse says nothing near holds a confirmable improvement. With a measured twin the learned
    twin, which saw two means within noise, learned little from it: the harm cost grows sixfold
    (CAUTION_AFTER_WORSE_WITHIN_NOISE). Without one it counts as a worse canary, doubling the cost: there the learned
    twin's posterior already counts the measurement, and sixfold stopped runs in a steep climb."""
    prof = profile()
    prior = {"svc": _bowl_twin(prof, 32, 800)} if twin else {}
    proposer = LearnedTwinProposer(settings(), prior_twins=prior, planner="none", deterministic=True)
    stable = {"batch": 8, "timeout": 400}
    within_noise, worse = (6.0, 10.0) if twin else (2.0, 2.0)

    def ends(canary: dict, gaps: list[float], reason: str) -> float:
        for i, gap in enumerate(gaps):
            record = step(stable, canary, i)
            record.canary.score = record.stable.score + gap
            proposer.observe("svc", prof, stable, canary, record)
        n = next(_keys)
        proposer.learn(
            "svc",
            prof,
            ProposalVerdict(n, dict(stable), dict(canary), reason == "CanaryBetter", reason, -0.05, f"uid/{n}"),
        )
        return proposer._state("svc", prof).caution

    assert ends({"batch": 16, "timeout": 400}, [0.4, 0.2], "Inconclusive") == 1.5  # measured better: flat
    assert ends({"batch": 4, "timeout": 400}, [0.3, -0.5], "Inconclusive") == 1.5 * within_noise  # worse on the whole
    capped = min(1.5 * within_noise * worse, 64.0)  # MAX_CAUTION
    assert ends({"batch": 8, "timeout": 800}, [-3.0], "CanaryWorse") == capped
    # Each canary is judged on its own steps: a flat one after them grows the cost by half again.
    assert ends({"batch": 8, "timeout": 200}, [0.1], "Inconclusive") == min(capped * 1.5, 64.0)
    assert ends({"batch": 16, "timeout": 800}, [2.0], "CanaryBetter") == 1.0  # a promotion resets it


def test_a_worse_canary_raises_the_harm_cost_more_where_a_measured_twin_led_to_it():
    """With a measured twin the jump it led to is near the optimum and the moves around it are coin flips: a worse
    canary raises the harm cost tenfold (CAUTION_AFTER_WORSE_WITH_TWIN), so a second harmful canary needs a much
    larger expected gain; without one the learned twin is overconfident and the cost only doubles."""
    prof = profile()
    stable, canary = {"batch": 8, "timeout": 400}, {"batch": 8, "timeout": 800}

    def after_a_worse_canary(proposer: LearnedTwinProposer) -> float:
        record = step(stable, canary)
        record.canary.score = record.stable.score - 3.0
        proposer.observe("svc", prof, stable, canary, record)
        n = next(_keys)
        proposer.learn(
            "svc", prof, ProposalVerdict(n, dict(stable), dict(canary), False, "CanaryWorse", -0.05, f"uid/{n}")
        )
        return proposer._state("svc", prof).caution

    with_twin = LearnedTwinProposer(
        settings(), prior_twins={"svc": _bowl_twin(prof, 32, 800)}, planner="none", deterministic=True
    )
    assert after_a_worse_canary(with_twin) == 10.0
    assert after_a_worse_canary(LearnedTwinProposer(settings(), planner="none", deterministic=True)) == 2.0


def test_a_restart_mid_canary_keeps_what_its_steps_measured(tmp_path):
    prof = profile()
    store = FileConfigStore(tmp_path)
    stable, canary = {"batch": 8, "timeout": 400}, {"batch": 4, "timeout": 400}
    first = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)
    record = step(stable, canary)
    record.canary.score = record.stable.score - 0.5  # worse, within noise
    first.observe("svc", prof, stable, canary, record)
    second = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)  # a new process
    n = next(_keys)
    second.learn("svc", prof, ProposalVerdict(n, stable, canary, False, "Inconclusive", -0.05, f"uid/{n}"))
    assert second._state("svc", prof).caution == 2.0  # as after a worse canary (1.5 had the steps been lost)


def test_without_twin_conditions_only_the_twin_itself_is_measured():
    prof = ParameterProfileSpec.model_validate({**profile().dump(), "twin": "acp"})
    asked = []

    def source(name, spec, conditions=None):
        asked.append(conditions)
        return _bowl_twin(prof, 4, 200)

    proposer = LearnedTwinProposer(
        settings(), twin_source=source, planner="none", deterministic=True, twin_conditions=False
    )
    proposer.pretrain("svc", prof)
    proposer._state("svc", prof).pretraining.join(30)
    assert asked == [None] and proposer.learning_status("svc", prof).twin_conditions == 1


def test_pretraining_measures_the_twin_in_the_background_and_reports_progress_and_failure():
    import threading

    from dwcp_autotuner.env.twin import Twin

    prof = ParameterProfileSpec.model_validate({**profile().dump(), "twin": "acp"})
    release = threading.Event()

    def slow(name, spec) -> Twin | None:
        release.wait(10)
        return None  # nothing measurable: the learned twin goes on without a prior

    proposer = LearnedTwinProposer(settings(), twin_source=slow, planner="none", deterministic=True)
    first = proposer.pretrain("svc", prof)
    assert first.episodes == 0 and first.episodes_total == 1 and "measuring the acp twin" in first.message
    assert proposer.pretrain("svc", prof).episodes == 0  # still measuring: the reconcile did not wait
    release.set()
    proposer._state("svc", prof).pretraining.join(10)
    assert proposer.pretrain("svc", prof).episodes == 1

    def broken(name, spec):
        raise RuntimeError("the workload is not installed")

    failing = LearnedTwinProposer(settings(), twin_source=broken, planner="none", deterministic=True)
    failing.pretrain("svc", prof)
    failing._state("svc", prof).pretraining.join(10)
    progress = failing.pretrain("svc", prof)
    assert (
        progress.failed and "the workload is not installed" in progress.message and "canaries alone" in progress.message
    )


def _three_parameter_profile() -> ParameterProfileSpec:
    return ParameterProfileSpec.model_validate(
        {
            "target": {"name": "svc-config"},
            "parameters": [
                {"name": "timeout", "min": 125, "max": 4000, "default": 2000, "scale": "log2"},
                {"name": "batch", "min": 1, "max": 64, "default": 16, "scale": "log2"},
                {"name": "replicas", "min": 3, "max": 15, "default": 7, "step": 1},
            ],
            "metrics": [{"name": "score", "query": 'score{variant="{{variant}}"}'}],
            "objective": [{"metric": "score", "goal": "maximize"}],
        }
    )


def _measured(score: float, n: int = 11) -> VariantMeasurement:
    return VariantMeasurement(score=score, score_std=0.07 * score, n=n, metrics={"score": score})


def test_a_converged_run_says_the_harm_cost_in_effect_and_the_best_configuration_it_leaves_untried():
    """ "Converged" is final, so it says what a user can act on: the harm cost in effect (the run's, raised by the
    canaries since the last promotion: `exploration.harmCostPct` is the knob), the best configuration never
    canaried and its odds, and how many it expects better were canaried already (each is canaried once)."""
    prof = profile()
    # The measured twin puts the top at batch 16 (live: 32): its top is promoted, the next move is worse, and the
    # tenfold cost after a worse canary with a measured twin stops the run.
    proposer = LearnedTwinProposer(
        settings(), prior_twins={"svc": _bowl_twin(prof, 16, 800)}, planner="none", deterministic=True
    )
    stable, proposals = _drive(proposer, prof, 10)
    done = proposer.propose("svc", prof, stable)
    assert isinstance(done, NoProposal) and done.reason == "Converged" and done.final, done
    assert proposer._state("svc", prof).caution == 10.0
    assert (
        "at a harm cost of 30 % of the score (3 % raised ×10 by the canaries since the last promotion)" in done.message
    )
    assert re.search(r"; a canary confirms \+[0-9.]+ % or more; the best untried", done.message), done.message
    untried = re.search(r"the best untried, (\{.*?\}): [0-9.]+ ± [0-9.]+, better with probability (\d+)%", done.message)
    assert untried is not None, done.message
    config = json.loads(untried.group(1))
    assert config != stable and config not in [p.config for _, p in proposals]
    assert 0 < int(untried.group(2)) < 100
    assert "canaried already" not in done.message  # nothing it expects better was canaried
    # The knob that lets a run canary riskier configurations is named, with the value in effect before the caution.
    assert done.message.endswith(
        "; a lower spec.exploration.harmCostPct (3 % here) lets a run canary riskier configurations"
    )

    # A canary that measured a little better and was rolled back as inconclusive is not tried again: said so.
    costly = ExplorationSettings.model_validate({"harmCostPct": 1000})
    flat = LearnedTwinProposer(settings(), exploration=costly, planner="none", deterministic=True)
    stable, near = {"batch": 8, "timeout": 400}, {"batch": 8, "timeout": 800}
    record = step(stable, near)
    record.canary.score = record.stable.score + 0.3
    flat.observe("svc", prof, stable, near, record)
    flat.learn("svc", prof, ProposalVerdict(99, dict(stable), dict(near), False, "Inconclusive", 0.0, "uid/flat"))
    done = flat.propose("svc", prof, stable)
    assert isinstance(done, NoProposal) and done.reason == "Converged", done
    assert "at a harm cost of 1500 % of the score (1000 % raised ×1.5 by the canaries" in done.message  # flat: ×1.5
    assert "1 configuration(s) it expects better were canaried already" in done.message


def test_a_run_that_canaried_every_configuration_does_not_point_at_the_harm_cost():
    """Where no configuration is left untried a lower harm cost would change nothing, so the message does not
    name it as the knob."""
    tiny = ParameterProfileSpec.model_validate(
        {
            "target": {"name": "svc-config"},
            "parameters": [
                {"name": "batch", "min": 8, "max": 16, "default": 8, "scale": "log2"},
                {"name": "timeout", "min": 400, "max": 800, "default": 400, "scale": "log2"},
            ],
            "metrics": [{"name": "score", "query": 'score{variant="{{variant}}"}'}],
            "objective": [{"metric": "score", "goal": "maximize"}],
        }
    )
    proposer = LearnedTwinProposer(settings(), planner="none", deterministic=True)
    stable = {"batch": 8, "timeout": 400}
    for config in ({"batch": 16, "timeout": 400}, {"batch": 8, "timeout": 800}, {"batch": 16, "timeout": 800}):
        record = step(stable, config)
        record.canary.score = record.stable.score * 0.5
        proposer.observe("svc", tiny, stable, config, record)
        proposer._state("svc", tiny).tried.add(canonical_json(config))
        proposer.learn("svc", tiny, verdict(stable, config, promoted=False))
    done = proposer.propose("svc", tiny, stable)
    assert isinstance(done, NoProposal) and done.reason == "Converged", done
    assert "the best untried" not in done.message and "harmCostPct" not in done.message, done.message


def _worse_canary(proposer, prof, stable: dict, canary: dict, stable_measured, canary_measured) -> None:
    """One canary step measured as given, then rolled back as worse, as the controller reports them."""
    failed = step_record(stable_measured, canary_measured, verdict="Failed", reason="CanaryWorse")
    proposer.observe("svc", prof, stable, canary, failed)
    proposer.learn("svc", prof, verdict(stable, canary, False))


def test_two_worse_neighbours_do_not_convince_the_twin_that_nothing_anywhere_is_better():
    """The first two canaries (one replica fewer, one more) were both worse: the twin must not conclude from three
    nearby points that no configuration anywhere is better. It did (their spread set its whole amplitude), and a
    run whose default was at 58 % of the optimum stopped there for good ("Converged")."""
    prof = _three_parameter_profile()
    proposer = LearnedTwinProposer(settings(), planner="none", deterministic=True)
    stable = prof.default_config()
    for replicas in (6, 8):
        _worse_canary(proposer, prof, stable, {**stable, "replicas": replicas}, _measured(1.0), _measured(0.92))
    proposal = proposer.propose("svc", prof, stable)
    assert isinstance(proposal, Proposal), proposal
    assert proposal.config["replicas"] == stable["replicas"] or proposal.config != stable  # something else is tried


def test_a_parameter_value_that_failed_in_one_context_is_expected_worse_in_another():
    """Main effects: a timeout that was much worse next to one batch size is expected worse next to another too
    (without a prior the twin is the sum of each parameter's effect plus a smaller interaction term)."""
    prof = _three_parameter_profile()
    twin = LearnedTwin(prof.tuning_space())
    base = prof.default_config()
    points = {
        (2000, 16, 7): 1.0,
        (1000, 16, 7): 1.2,
        (2000, 32, 7): 1.1,
        (2000, 16, 9): 1.05,
        (125, 16, 7): 0.3,  # the short timeout is a disaster here
        (1000, 32, 9): 1.3,
    }
    for (timeout, batch, replicas), score in points.items():
        twin.add({**base, "timeout": timeout, "batch": batch, "replicas": replicas}, score, 0.03 * score, 11)
    elsewhere = twin.index_of({"timeout": 125, "batch": 32, "replicas": 9})
    neighbour = twin.index_of({"timeout": 1000, "batch": 32, "replicas": 9})
    mean, sd = twin.predict([elsewhere, neighbour])
    assert mean[0] < 0.7 * mean[1], (mean, sd)  # expected much worse than the measured neighbour, not "unknown"


def test_the_gain_a_canary_must_show_follows_the_analysis_significance_and_its_analyses():
    """What the last step can confirm: z standard errors of the difference between the stable mean of the step
    before (one interval's samples) and the canary's, whose window grows over up to maxInconclusive analyses."""
    prof = profile()
    stable = prof.default_config()
    canary = {**stable, "batch": 16}
    noisy = step_record(
        VariantMeasurement(score=100.0, score_std=10.0, n=10), VariantMeasurement(score=101.0, score_std=10.0, n=10)
    )
    gains = {}
    for significance, analyses in ((0.001, 3), (0.05, 3), (0.001, 1)):
        proposer = LearnedTwinProposer(settings(), planner="none", significance=significance, analyses=analyses)
        proposer.observe("svc", prof, stable, canary, noisy)
        gains[significance, analyses] = proposer._gain(proposer._state("svc", prof), prof, 100.0)
    # sd 10, 10 samples of the stable variant, 30 of the canary's: 3.09 × 3.65 and 1.64 × 3.65; one analysis: 10
    # samples each, 3.09 × 4.47
    assert gains[0.001, 3] == pytest.approx(3.090 * 10 * math.sqrt(1 / 10 + 1 / 30), rel=0.01)
    assert gains[0.05, 3] == pytest.approx(1.645 * 10 * math.sqrt(1 / 10 + 1 / 30), rel=0.01)
    assert gains[0.001, 1] == pytest.approx(3.090 * 10 * math.sqrt(2 / 10), rel=0.01)


def test_with_a_measured_twin_a_configuration_its_twin_says_breaches_a_guard_is_not_canaried():
    """The twin's best score is at a configuration whose `ratio` (a guard, 10 % tolerance) is 30 % lower: the
    first canary must be the best configuration the twin says keeps the guard, not the best score. (The first
    canary of the local loop's HDE was rolled back GuardBreached at 100 % for this: guards were screened only
    on canaried data, with the 50 % score margin added.)"""
    from dwcp_autotuner.env.twin import Twin

    prof = profile(
        extra={
            "metrics": [
                {"name": "score", "query": 'score{variant="{{variant}}"}'},
                {"name": "ratio", "query": 'ratio{variant="{{variant}}"}'},
            ],
            "guards": [{"metric": "ratio", "goal": "maximize", "maxDegradationPct": 10}],
        }
    )
    space = prof.tuning_space()
    shape = tuple(len(p.grid()) for p in space.parameters)
    means = np.zeros((*shape, 2))
    for index in np.ndindex(shape):
        config = {p.name: p.grid()[i] for p, i in zip(space.parameters, index)}
        means[index] = (truth(config), 10.0 * (0.7 if config["batch"] >= 32 else 1.0))  # big batches: ratio -30 %
    twin = Twin(space, ("score", "ratio"), means, np.array([0.01, 0.01]))
    proposer = LearnedTwinProposer(settings(), prior_twins={"svc": twin}, planner="none", deterministic=True)
    proposal = proposer.propose("svc", prof, prof.default_config())
    assert isinstance(proposal, Proposal)
    assert proposal.config["batch"] < 32, proposal  # the best score the guard allows
    assert proposal.config != prof.default_config()


def test_a_new_cycle_starts_from_the_last_cycles_learned_twin_as_a_prior_not_from_its_measurements(tmp_path):
    """After a trigger (a workload shift) the stable configuration's old samples no longer measure it: kept as
    measurements they outweighed its new ones and the run held for good on a surface that was gone."""
    prof = profile()
    store = FileConfigStore(tmp_path)
    proposer = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)
    stable, _ = _drive(proposer, prof, 6)
    state = proposer._state("svc", prof)
    state.caution = 12.0
    points = [(i, j) for i in range(7) for j in range(6)]
    before = state.twin.predict(points)[0]
    proposer.new_cycle("svc", prof)
    learning = proposer.learning_status("svc", prof)
    assert learning.observations == 0 and learning.prior.startswith("the learned twin of the last cycle")
    assert state.caution == 1.0
    assert np.allclose(state.twin.predict(points)[0], before, rtol=0.02)  # what it learned is the prior's shape
    # The workload shifted: everything scores 1.5 times higher now. One step at the new level is believed.
    shifted = step(stable, stable)
    for measured in (shifted.stable, shifted.canary):
        measured.score *= 1.5
    proposer.observe("svc", prof, stable, stable, shifted)
    mean = state.twin.predict([state.twin.index_of(stable)])[0][0]
    assert mean == pytest.approx(1.5 * truth(stable), rel=0.05)
    # A restart rebuilds the same prior from the stored model.
    again = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)._state("svc", prof)
    assert again.twin.prior_name == state.twin.prior_name and again.twin.size == state.twin.size
    assert np.allclose(again.twin.predict(points)[0], state.twin.predict(points)[0])


def test_an_operator_restart_keeps_the_prior_a_similar_stored_model_gave(tmp_path):
    store = FileConfigStore(tmp_path)
    _drive(LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True), profile(), 6)
    other = profile(name_max=128)
    first = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)
    stable = other.default_config()
    canary = {**stable, "batch": 16}
    first.observe("other", other, stable, canary, step(stable, canary))  # stores "other"'s own model
    second = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)  # a new process
    a, b = first._state("other", other), second._state("other", other)
    assert b.twin.prior is not None and b.twin.prior_name == a.twin.prior_name
    assert a.twin.prior_name.startswith("similar model svc-model")
    points = [(i, j) for i in range(8) for j in range(6)]
    assert np.allclose(a.twin.predict(points)[0], b.twin.predict(points)[0])
    assert np.allclose(a.twin.predict(points)[1], b.twin.predict(points)[1])


def test_a_score_near_zero_keeps_a_safety_margin_of_its_objective_terms_size():
    """A score made of terms that cancel (a success rate less a latency, each near 0.5) is near zero where the
    component is failing, as ACP's is under heavy message loss. The margin of `safetyMarginPct` was a share of that
    score: nothing could be within half of 0.001, and the run held ("NothingSafe") where larger batches are better.
    It is a share of the terms' size (0.5 + 0.5) instead."""
    prof = ParameterProfileSpec.model_validate(
        {
            "target": {"name": "svc-config"},
            "parameters": [
                {"name": "batch", "min": 1, "max": 64, "default": 8, "scale": "log2"},
                {"name": "timeout", "min": 100, "max": 3200, "default": 400, "scale": "log2"},
            ],
            "metrics": [{"name": "success"}, {"name": "latency_ms"}],
            "objective": [
                {"metric": "success", "goal": "maximize"},
                {"metric": "latency_ms", "goal": "minimize", "scale": 1000.0},
            ],
        }
    )

    def measured(config) -> VariantMeasurement:
        success = 0.5 + 0.04 * math.log2(config["batch"] / 8) - 0.3 * abs(math.log2(config["timeout"] / 400))
        latency = 499.0 - 40.0 * math.log2(config["batch"] / 8)
        score = success - latency / 1000.0
        metrics = {"success": success, "latency_ms": latency}
        return VariantMeasurement(score=score, score_std=0.02, n=11, metrics=metrics)

    proposer = LearnedTwinProposer(settings(), planner="none", deterministic=True)
    stable = prof.default_config()
    assert measured(stable).score == pytest.approx(0.001)
    for canary in ({"batch": 8, "timeout": 800}, {"batch": 8, "timeout": 200}, {"batch": 4, "timeout": 400}):
        _worse_canary(proposer, prof, stable, canary, measured(stable), measured(canary))
    proposal = proposer.propose("svc", prof, stable)
    assert isinstance(proposal, Proposal), proposal
    twin = proposer._state("svc", prof).twin
    a = proposer._assess(
        proposer._state("svc", prof), prof, np.array([twin.index_of(proposal.config)]), twin.index_of(stable)
    )
    assert a.floor == pytest.approx(a.stable - 0.5 * (0.5 + 0.499), abs=0.01)  # half the terms' size below stable
    assert a.pessimistic[0] >= a.floor


class _DiscardedWrite(Exception):
    """The run's status write failed (another writer): the runtime drops the whole tick, as `RunMoved` does."""


@pytest.mark.parametrize("strategy", ["learned", "learned with a twin", "DQN"])
def test_a_proposal_whose_tick_was_discarded_is_proposed_again_not_counted_as_tried(tmp_path, strategy):
    """A tick whose status write fails is lost: its proposal never reached a canary. Before, the proposer counted
    it as tried all the same, so each lost tick used up one move; on a two-parameter profile four lost ticks left
    the run `Converged` ("every neighbour of the stable configuration was tried") without a single canary."""
    prof = profile()
    if strategy == "DQN":  # the online agent of `agent.strategy: DQN` (a profile without a twin)
        proposer = AgentPool(settings(epsilonStart=0.0, epsilonMin=0.0))
    else:
        prior = {"svc": _bowl_twin(prof, 32, 800)} if strategy == "learned with a twin" else {}
        proposer = LearnedTwinProposer(settings(), prior_twins=prior, planner="none", deterministic=True)
    store = FileConfigStore(tmp_path)
    store.put(NS, "svc-config", {"config.json": canonical_json(prof.default_config())})
    spec = OptimizationRunSpec.model_validate(
        {"profiles": ["svc"], "budget": {"maxProposals": 5}, "rollout": {"analysisIntervalSeconds": 60}}
    )
    lost, proposals = 6, []

    def persist(status: RunStatus) -> None:
        nonlocal lost
        if status.current is not None and lost > 0:  # the write-ahead of a proposal's canary
            lost -= 1
            proposals.append(status.current.config)
            raise _DiscardedWrite

    status, now = RunStatus(), dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    for _ in range(12):
        now += dt.timedelta(seconds=61)
        ctx = RunContext("run", NS, "uid", 1, spec, status.model_copy(deep=True), {"svc": prof}, now)
        try:
            status = reconcile(ctx, Ports(store, InProcessMetrics(), RecordingEvents(), proposer, persist))
        except _DiscardedWrite:
            continue  # the tick's status is lost: the next one starts from the last written
        if status.current is not None:
            break
    assert lost == 0 and len({canonical_json(c) for c in proposals}) == 1, proposals  # the same one each time
    assert status.current is not None and status.current.config == proposals[0], status.message
    assert "svc" not in status.holds
    assert CANARY_KEY in store.read(ConfigRef(NS, "svc-config")).data


def test_a_proposal_in_its_rollback_cooldown_is_declined_and_the_proposer_offers_the_next_best(tmp_path):
    """A configuration rolled back earlier (by this run before an operator restart: the new process's proposer has
    not canaried it) is in its cooldown: the controller declines it, and the proposer, told so, proposes another
    rather than the same one again."""
    prof = profile()
    twin = _bowl_twin(prof, 32, 800)
    first = _first_proposal(prof, twin).config
    proposer = LearnedTwinProposer(settings(), prior_twins={"svc": twin}, planner="none", deterministic=True)
    store = FileConfigStore(tmp_path)
    store.put(NS, "svc-config", {"config.json": canonical_json(prof.default_config())})
    spec = OptimizationRunSpec.model_validate({"profiles": ["svc"], "budget": {"maxProposals": 5}})
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    earlier = (now - dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    status = RunStatus(rejected=[RejectedConfig(profile="svc", config=first, at=earlier, reason="CanaryWorse")])
    for _ in range(4):
        now += dt.timedelta(seconds=61)
        ctx = RunContext("run", NS, "uid", 1, spec, status, {"svc": prof}, now)
        status = reconcile(ctx, Ports(store, InProcessMetrics(), RecordingEvents(), proposer))
        if status.current is not None:
            break
    assert status.current is not None, status.message
    assert status.current.config != first and status.current.config != prof.default_config()


def test_a_step_analysed_again_replaces_its_measurement_instead_of_counting_its_samples_twice(tmp_path):
    """Each analysis of a canary step measures from the step's start: a second one (the first was inconclusive, or
    its tick's status write was lost) holds the first one's samples too. Before, both were kept as independent
    measurements, and the learned twin was surer of the configuration than its samples allow."""
    prof = profile()
    store = FileConfigStore(tmp_path)
    stable, canary = {"batch": 8, "timeout": 400}, {"batch": 16, "timeout": 400}
    first = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)
    early = step_record(_measured(90.0, n=6), _measured(93.0, n=6))
    first.observe("svc", prof, stable, canary, early)
    second = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)  # a restart between
    later = step_record(_measured(90.5, n=12), _measured(92.0, n=12))  # the same step, from its start to now
    second.observe("svc", prof, stable, canary, later)
    twin = second._state("svc", prof).twin
    assert sorted((o.mean, o.n) for o in twin.observations) == [(90.5, 12), (92.0, 12)]
    assert second._state("svc", prof).canary_gap == [pytest.approx(1.5)]
    nxt = step_record(_measured(90.0, n=12), _measured(93.0, n=12), index=1)  # the next step adds to them
    second.observe("svc", prof, stable, canary, nxt)
    assert len(twin.observations) == 4 and len(second._state("svc", prof).canary_gap) == 2


@pytest.mark.parametrize("strategy", ["learned", "DQN"])
def test_a_declined_proposal_is_not_offered_again_and_another_is(strategy):
    prof = profile()
    if strategy == "DQN":
        proposer = AgentPool(settings(epsilonStart=0.0, epsilonMin=0.0))
    else:
        proposer = LearnedTwinProposer(settings(), planner="none", deterministic=True)
    stable = prof.default_config()
    first = proposer.propose("svc", prof, stable)
    assert proposer.propose("svc", prof, stable).config == first.config  # asked again: the same
    proposer.decline("svc", prof, first.config)
    second = proposer.propose("svc", prof, stable)
    assert isinstance(second, Proposal) and second.config not in (first.config, stable)


def _promoted(proposer, prof, stable: dict, canary: dict, stable_score: float, canary_score: float) -> None:
    """One canary step measured as given, then promoted, as the controller reports them."""
    proposer.observe("svc", prof, stable, canary, step_record(_measured(stable_score), _measured(canary_score)))
    proposer.learn("svc", prof, verdict(stable, canary, True))


def _margin_below_stable(proposer, prof, stable: dict) -> float:
    """How far below the stable score the pessimistic floor lies, as a share of it (the margin in effect)."""
    state = proposer._state("svc", prof)
    index = state.twin.index_of(stable)
    assessed = proposer._assess(state, prof, np.array([index]), index)
    return (assessed.stable - assessed.floor) / abs(assessed.stable)


def test_a_stable_score_of_zero_with_zero_terms_still_gets_a_canary_and_a_reason_without_a_percentage():
    """A score and objective terms of exactly zero (a success rate of 0: nothing works yet) left the safety margin at
    nothing: every candidate's lower bound was below it and the run held for good. The margin then takes the size of
    the scores measured elsewhere; a change relative to zero has no percentage, so the reason gives the score."""
    prof = profile()
    proposer = LearnedTwinProposer(settings(), planner="none", deterministic=True)
    stable = prof.default_config()

    def zero_spread(score: float) -> VariantMeasurement:
        return VariantMeasurement(score=score, score_std=0.0, n=11, metrics={"score": score})

    first = proposer.propose("svc", prof, stable)
    proposer.observe("svc", prof, stable, first.config, step_record(zero_spread(0.0), zero_spread(-1.0)))
    proposer.learn("svc", prof, verdict(stable, first.config, False))
    second = proposer.propose("svc", prof, stable)
    assert isinstance(second, Proposal), second
    assert second.expected_improvement_pct is None and "expected a score of" in second.reason, second.reason


def test_a_promotion_that_gained_little_narrows_the_safety_margin_and_a_restart_keeps_it(tmp_path):
    """Without a measured twin, a small gain says the run is near a top, where a candidate far below the stable score
    is not worth its risk, while a large one says it is still climbing, where the first moves are uncertain by tens of
    per cent. After a promotion that gained under 20 % the pessimistic floor lies 0.6 of `safetyMarginPct` below the
    stable score (30 % of 50 %), after a large one the whole margin; a restart and a new cycle are as said."""
    prof = profile()
    store = FileConfigStore(tmp_path)
    proposer = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)
    a, b, c = {"batch": 8, "timeout": 400}, {"batch": 16, "timeout": 400}, {"batch": 32, "timeout": 400}
    _promoted(proposer, prof, a, b, 50.0, 100.0)  # +100 %: still climbing
    assert _margin_below_stable(proposer, prof, b) == pytest.approx(0.5, abs=0.01)
    _promoted(proposer, prof, b, c, 100.0, 105.0)  # +5 %: near a top
    assert _margin_below_stable(proposer, prof, c) == pytest.approx(0.3, abs=0.01)

    restarted = LearnedTwinProposer(settings(), models=ModelStore(store, NS), deterministic=True)
    assert _margin_below_stable(restarted, prof, c) == pytest.approx(0.3, abs=0.01)
    restarted.new_cycle("svc", prof)  # a trigger fired: the next cycle climbs afresh
    assert _margin_below_stable(restarted, prof, c) == pytest.approx(0.5, abs=0.01)

    # With a measured twin the margin is as the run sets it: the narrowing was measured only without one.
    twinned = LearnedTwinProposer(
        settings(), prior_twins={"svc": _bowl_twin(prof, 32, 400)}, planner="none", deterministic=True
    )
    _promoted(twinned, prof, a, b, 50.0, 100.0)
    _promoted(twinned, prof, b, c, 100.0, 105.0)
    assert _margin_below_stable(twinned, prof, c) == pytest.approx(0.5, abs=0.01)


def test_where_nothing_is_worth_a_canary_within_the_narrowed_margin_the_whole_margin_applies_rather_than_a_hold():
    """The narrowed margin changes which candidate is canaried; it never makes a run hold where the margin the run
    set would have let a canary out. Here (a pessimism of 1.5 sd) no candidate is within 30 % of the stable score
    after a small promotion, and some are within 50 %: one of those is proposed."""
    prof = profile()
    cautious = ExplorationSettings.model_validate({"pessimism": 1.5})
    proposer = LearnedTwinProposer(settings(), exploration=cautious, planner="none", deterministic=True)
    a, b, c = {"batch": 8, "timeout": 400}, {"batch": 16, "timeout": 400}, {"batch": 32, "timeout": 400}
    _promoted(proposer, prof, a, b, 50.0, 100.0)
    _promoted(proposer, prof, b, c, 100.0, 105.0)
    state = proposer._state("svc", prof)
    everywhere = proposer._candidates(state, state.twin.index_of(c), int(max(state.twin.sizes)))
    narrowed = proposer._assess(state, prof, everywhere, state.twin.index_of(c))
    assert narrowed.margin == 30.0 and not ((narrowed.value > 0) & narrowed.safe).any()
    proposal = proposer.propose("svc", prof, c)
    assert isinstance(proposal, Proposal), proposal
    whole = proposer._assess(
        state, prof, np.array([state.twin.index_of(proposal.config)]), state.twin.index_of(c), True
    )
    assert whole.margin == 50.0 and whole.safe[0] and whole.pessimistic[0] < narrowed.floor

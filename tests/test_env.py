"""Twins (measurement, noise, cache) and the RL environment (state, actions at the bounds, reward).

The twin tests measure a small synthetic workload (a known function plus seeded noise) so that
the expected surface is known exactly; the real workloads have their own tests.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dwcp_autotuner.env import twin as twin_module
from dwcp_autotuner.env.tuning_env import Component, TuningEnv
from dwcp_autotuner.env.twin import Twin, load_or_measure_twin, measure_twin, twin_processes
from dwcp_autotuner.models.builtin import BUILTIN_SPACES
from dwcp_autotuner.models.space import MetricSpec, ObjectiveTerm, Parameter, SoftConstraint, TuningSpace
from dwcp_autotuner.workloads import make_workload

SPACE = TuningSpace(
    parameters=[
        Parameter(name="a", min=1, max=9, default=3),
        Parameter(name="b", min=1, max=64, default=8, scale="log2"),
    ],
    metrics=[MetricSpec(name="speed"), MetricSpec(name="memory")],
    objective=[ObjectiveTerm(metric="speed", goal="maximize")],
    constraints=[SoftConstraint(metric="memory", max=40.0, penalty=1.0)],
)


class BowlWorkload:
    """speed peaks at a=6, b=16; memory grows with b; 5 % multiplicative noise from the seed."""

    name = "bowl"
    metric_names = ("speed", "memory")

    def __init__(self, noise=0.05, tag="x"):
        self.noise, self.tag, self.runs = noise, tag, 0

    def options(self):
        return {"noise": self.noise, "tag": self.tag}

    def run(self, config, seed):
        self.runs += 1
        rng = np.random.default_rng(seed * 1000 + config["a"] * 100 + config["b"])
        speed = 100.0 - 2.0 * (config["a"] - 6) ** 2 - 3.0 * (np.log2(config["b"]) - 4) ** 2
        return {"speed": speed * (1 + self.noise * rng.standard_normal()), "memory": float(config["b"]) * 1.0}


def test_twin_measures_every_grid_point_and_finds_the_optimum():
    workload = BowlWorkload(noise=0.0)
    twin = measure_twin(SPACE, workload, seed=1, noise_points=3, noise_repeats=3)
    assert twin.means.shape == (9, 7, 2)
    index, score = twin.optimum()
    best = twin.config_at(index)
    # memory 64 breaks the 40 limit, so the penalty keeps b at 16 (the bowl's own optimum).
    assert best == {"a": 6, "b": 16} and score == pytest.approx(100.0)
    assert np.all(twin.noise_cv == 0.0)
    assert twin.provenance["seed"] == 1 and twin.provenance["grid_points"] == 63 and "machine" in twin.provenance


def test_twin_noise_is_estimated_from_repeats():
    twin = measure_twin(SPACE, BowlWorkload(noise=0.05), seed=2, noise_points=6, noise_repeats=8)
    speed_cv = twin.noise_cv[0]
    assert 0.02 < speed_cv < 0.09
    rng = np.random.default_rng(0)
    samples = np.array([twin.sample((3, 3), rng)[0] for _ in range(2000)])
    assert samples.std() / samples.mean() == pytest.approx(speed_cv, rel=0.15)


class SlowSpellWorkload(BowlWorkload):
    """The bowl without noise, its speed a timing: runs 20–39 of a measurement come out 30 % slow, as on a
    machine that was busy for a while (another process, a lower clock)."""

    timed_metrics = ("speed",)

    def run(self, config, seed):
        result = super().run(config, seed)
        if 20 <= self.runs < 40:
            result["speed"] *= 0.7
        return result


def _bowl_speed(space: TuningSpace) -> np.ndarray:
    a, b = (np.array(p.grid(), dtype=float) for p in space.parameters)
    return 100.0 - 2.0 * (a[:, None] - 6) ** 2 - 3.0 * (np.log2(b)[None, :] - 4) ** 2


def test_a_slow_spell_while_timing_is_not_measured_as_an_effect():
    """Measured in grid order, the spell would make twenty neighbouring points 30 % slower: a bump an agent
    takes for an effect. A timed twin is measured in shuffled passes and each point is their median."""
    workload = SlowSpellWorkload(noise=0.0)
    twin = measure_twin(SPACE, workload, seed=5, noise_points=3, noise_repeats=3)
    assert np.allclose(twin.means[..., 0], _bowl_speed(SPACE))
    assert twin.provenance["passes"] == twin_module.TIMING_PASSES == 3
    assert workload.runs == 3 * 63 + 3 * 3


def test_a_twin_without_timings_is_measured_once():
    workload = BowlWorkload(noise=0.0)
    workload.timed_metrics = ()  # a pure function of (config, seed): passes would only repeat it
    twin = measure_twin(SPACE, workload, seed=5, noise_points=3, noise_repeats=3, processes=1)
    assert np.allclose(twin.means[..., 0], _bowl_speed(SPACE))
    assert twin.provenance["passes"] == 1 and workload.runs == 63 + 3 * 3


def test_twin_cache_round_trip_and_invalidation(tmp_path):
    workload = BowlWorkload()
    first, cached = load_or_measure_twin(SPACE, workload, seed=3, cache_dir=tmp_path)
    runs = workload.runs
    assert not cached and runs > 63
    second, cached = load_or_measure_twin(SPACE, workload, seed=3, cache_dir=tmp_path)
    assert cached and workload.runs == runs
    assert np.array_equal(first.means, second.means) and second.provenance == json.loads(json.dumps(first.provenance))
    # Different options, seed or space: measured again, never a wrong cache hit.
    _, cached = load_or_measure_twin(SPACE, BowlWorkload(tag="other"), seed=3, cache_dir=tmp_path)
    assert not cached
    _, cached = load_or_measure_twin(SPACE, workload, seed=4, cache_dir=tmp_path)
    assert not cached
    # A damaged cache file is re-measured, not trusted.
    for npz in (tmp_path / "twins").glob("*.npz"):
        npz.write_bytes(b"garbage")
    _, cached = load_or_measure_twin(SPACE, workload, seed=3, cache_dir=tmp_path)
    assert not cached


def _flat_twin(space: TuningSpace, metric_names, value=1.0) -> Twin:
    shape = tuple(len(p.grid()) for p in space.parameters)
    return Twin(space, tuple(metric_names), np.full((*shape, len(metric_names)), value), np.zeros(len(metric_names)))


def test_dwcp_environment_has_19_actions_and_39_state_dimensions():
    components = [Component(n, s, _flat_twin(s, [m.name for m in s.metrics])) for n, s in BUILTIN_SPACES.items()]
    env = TuningEnv(components, history=2)
    assert env.action_count == 19
    assert env.observation_size == 9 + 2 * 15 == 39
    obs = env.reset(start="default")
    assert obs.shape == (39,) and obs.dtype == np.float32
    assert str(env.action_meaning(0)) == "no-op"
    assert (
        str(env.action_meaning(1)) == "hde.compression_level +"
        and str(env.action_meaning(2)) == "hde.compression_level -"
    )
    assert str(env.action_meaning(18)) == "acp.quorum_size -"


def test_actions_never_cross_the_hard_bounds():
    space = BUILTIN_SPACES["acp"]
    env = TuningEnv([Component("acp", space, _flat_twin(space, [m.name for m in space.metrics]))], seed=0)
    env.reset(start="default")
    for _ in range(20):  # timeout_ms up, far past its grid
        env.step(1)
    for _ in range(20):  # quorum_size down
        env.step(6)
    config = env.configs()["acp"]
    assert config["timeout_ms"] == 5000 and config["quorum_size"] == 3
    obs, _, _ = env.step(0)
    assert obs[0] == pytest.approx(1.0) and obs[2] == pytest.approx(0.0)


def test_reward_telescopes_objective_changes_and_charges_moves_and_violations():
    workload = BowlWorkload(noise=0.0)
    twin = measure_twin(SPACE, workload, seed=1, noise_points=1, noise_repeats=2)
    env = TuningEnv([Component("bowl", SPACE, twin)], change_cost=0.01, seed=0)
    env.reset(start="default")  # a=3, b=8
    start_score = twin.score_grid()[twin.baseline_index()]
    rewards = [env.step(a)[1] for a in (1, 1, 1, 3)]  # a: 3 -> 6, b: 8 -> 16
    objective_gain = (100.0 - (100.0 - 2 * 9 - 3 * 1)) / abs(start_score)
    assert sum(rewards) == pytest.approx(objective_gain - 4 * 0.01)
    # A no-op costs nothing and changes nothing.
    assert env.step(0)[1] == pytest.approx(0.0)
    # b = 64 breaks the memory limit (64 > 40): every step there pays the penalty.
    env.step(3), env.step(3)
    _, reward, _ = env.step(0)
    assert reward == pytest.approx(-1.0 * (64 - 40) / 40 / abs(start_score))


def test_no_state_is_terminal_and_random_starts_cover_the_grid():
    twin = measure_twin(SPACE, BowlWorkload(noise=0.0), seed=1, noise_points=1, noise_repeats=2)
    env = TuningEnv([Component("bowl", SPACE, twin)], steps_per_episode=5, random_start_probability=1.0, seed=3)
    starts = set()
    for _ in range(30):
        env.reset()
        starts.add(tuple(env.indices()[0]))
        # The trainer truncates at steps_per_episode; the environment never claims an end.
        assert not any(env.step(0)[2] for _ in range(8))
    assert len(starts) > 10


def test_vectorised_step_penalties_equal_the_space_definition():
    """The environment computes penalties with arrays; they must equal TuningSpace.penalty exactly."""
    space = TuningSpace(
        parameters=[Parameter(name="a", min=1, max=4, default=2)],
        metrics=[MetricSpec(name="x"), MetricSpec(name="y")],
        objective=[ObjectiveTerm(metric="x", goal="maximize", weight=2.0, scale=5.0)],
        constraints=[
            SoftConstraint(metric="x", max=12.0, min=3.0, penalty=1.5),
            SoftConstraint(metric="y", max=30.0, max_increase_pct=10.0, penalty=0.7),
        ],
    )
    rng = np.random.default_rng(5)
    means = rng.uniform(1.0, 40.0, size=(4, 2))
    twin = Twin(space, ("x", "y"), means, np.array([0.3, 0.3]))
    env = TuningEnv([Component("c", space, twin)], seed=1)
    baseline = twin.metrics_at(twin.baseline_index())
    env.reset(start="default")
    for _ in range(200):
        env._indices = [[int(rng.integers(4))]]
        vector, objectives, penalties = env._measure()
        metrics = {"x": vector[0], "y": vector[1]}
        assert penalties[0] == pytest.approx(space.penalty(metrics, baseline))
        assert objectives[0] == pytest.approx(space.objective_value(metrics))


def test_twin_repeats_average_seeds_and_smooth_the_surface(tmp_path):
    """Averaging a grid point over seeds shrinks the noise baked into the surface by about √repeats."""
    workload = BowlWorkload(noise=0.05)
    single = measure_twin(SPACE, workload, seed=10, repeats=1, noise_points=2, noise_repeats=2)
    averaged = measure_twin(SPACE, workload, seed=10, repeats=9, noise_points=2, noise_repeats=2)
    truth = np.array(
        [
            [100.0 - 2.0 * (a - 6) ** 2 - 3.0 * (np.log2(b) - 4) ** 2 for b in SPACE.parameter("b").grid()]
            for a in SPACE.parameter("a").grid()
        ]
    )
    error_single = np.abs(single.means[..., 0] / truth - 1).mean()
    error_averaged = np.abs(averaged.means[..., 0] / truth - 1).mean()
    assert error_averaged < error_single / 2
    assert averaged.provenance["repeats"] == 9
    # Repeats are part of the cache key: a single-seed twin is never served for a 3-seed request.
    load_or_measure_twin(SPACE, workload, seed=10, repeats=1, cache_dir=tmp_path)
    _, cached = load_or_measure_twin(SPACE, workload, seed=10, repeats=3, cache_dir=tmp_path)
    assert not cached


def test_a_twin_without_timings_is_measured_on_several_processes_and_equals_the_serial_one(monkeypatch):
    # ACP is simulated (no clock in its metrics): the same twin whichever process ran each point.
    acp = BUILTIN_SPACES["acp"]
    narrow = {"timeout_ms": (1000, 2000, 2000), "batch_size": (16, 32, 16), "quorum_size": (4, 7, 7)}
    small = acp.model_copy(
        update={
            "parameters": [
                p.model_copy(update=dict(zip(("min", "max", "default"), narrow[p.name], strict=True)))
                for p in acp.parameters
            ]
        }
    )
    workload = make_workload("acp", quick=True)
    seen = []
    serial = measure_twin(small, workload, seed=5, noise_points=2, noise_repeats=2, processes=1)
    spread = measure_twin(
        small, workload, seed=5, noise_points=2, noise_repeats=2, processes=2, progress=lambda d, t: seen.append((d, t))
    )
    assert spread.provenance["processes"] == 2 and serial.provenance["processes"] == 1
    np.testing.assert_array_equal(spread.means, serial.means)
    np.testing.assert_array_equal(spread.noise_cv, serial.noise_cv)
    total = small.grid_size() + 2 * 2
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)

    # Who decides: a space that reads a timing is measured serially, and so is an unknown workload.
    assert twin_processes(small, workload) == twin_module.twin_processes(acp, workload) >= 1
    assert twin_processes(BUILTIN_SPACES["hde"], make_workload("hde", quick=True)) == 1  # throughput
    assert twin_processes(BUILTIN_SPACES["pba"], make_workload("pba", quick=True)) == 1  # prediction latency
    assert twin_processes(SPACE, BowlWorkload()) == 1  # says nothing about its timings
    # A worker of the operator's (daemonic) pool may not start processes: serial there.
    monkeypatch.setattr(twin_module.multiprocessing, "current_process", lambda: type("P", (), {"daemon": True})())
    assert twin_processes(small, workload) == 1


def test_report_explains_a_local_optimum_of_the_grid():
    from dwcp_autotuner.tuning.pipeline import ComponentResult

    space = TuningSpace(
        parameters=[Parameter(name="n", min=1, max=9, default=1)],
        metrics=[MetricSpec(name="speed")],
        objective=[ObjectiveTerm(metric="speed", goal="maximize")],
    )
    # Two peaks: n=3 (local, 10) and n=8 (global, 12), a dip between them.
    speeds = [5, 8, 10, 7, 6, 7, 9, 12, 11]
    twin = Twin(space, ("speed",), np.array(speeds, dtype=float).reshape(9, 1), np.zeros(1))
    stuck = ComponentResult("c", space, twin=twin, tuned_config={"n": 3}, optimum_config={"n": 8})
    assert "local optimum" in stuck.local_optimum_note() and "5 steps away" in stuck.local_optimum_note()
    climbing = ComponentResult("c", space, twin=twin, tuned_config={"n": 7}, optimum_config={"n": 8})
    assert climbing.local_optimum_note() is None  # a better neighbour exists: not stuck, just short
    assert (
        ComponentResult("c", space, twin=twin, tuned_config={"n": 8}, optimum_config={"n": 8}).local_optimum_note()
        is None
    )


def test_the_fraction_of_the_optimum_rises_with_the_score_even_through_zero():
    """A score that rises through zero (ACP's under heavy message loss: -0.06 at the default, +0.10 one step away)
    must read as a larger fraction: the benches and `tune` report it as how close a configuration is."""
    space = TuningSpace(
        parameters=[Parameter(name="n", min=1, max=5, default=1)],
        metrics=[MetricSpec(name="speed")],
        objective=[ObjectiveTerm(metric="speed", goal="maximize")],
    )
    from dwcp_autotuner.tuning.pipeline import ComponentResult

    def fraction(twin: Twin, score: float) -> float | None:
        """What `tune`'s report says of a tuned configuration scoring `score` on `twin`."""
        best = float(twin.score_grid().max())
        return ComponentResult(
            "c",
            space,
            twin=twin,
            tuned_config={"n": 1},
            optimum_config={"n": 5},
            tuned_twin_score=score,
            optimum_score=best,
        ).fraction_of_optimum

    speeds = [-4.0, -0.06, 0.1, 0.7, 1.3]
    twin = Twin(space, ("speed",), np.array(speeds).reshape(5, 1), np.zeros(1))
    fractions = [fraction(twin, s) for s in speeds]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert fractions[1] < 0 < fractions[2] == pytest.approx(0.1 / 1.3)
    # With no positive score the ratio means nothing: between the grid's worst and best points instead.
    losses = Twin(space, ("speed",), -np.array([5.0, 4.0, 3.0, 2.0, 1.0]).reshape(5, 1), np.zeros(1))
    assert [fraction(losses, s) for s in (-5.0, -3.0, -1.0)] == [0.0, 0.5, 1.0]

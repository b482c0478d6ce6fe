"""The DQN agent layer: schedule, settings, replay, TD targets, learning, checkpoints."""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from dwcp_autotuner.agent import (
    AgentSettings,
    CheckpointError,
    CheckpointMismatch,
    DQNAgent,
    Environment,
    EpisodeStats,
    ReplayBuffer,
    Transition,
    epsilon_at,
    from_bytes,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
    td_target,
    to_bytes,
)
from tests.support.grid import GridBowl

# --- schedule and settings ----------------------------------------------------------------------


def test_epsilon_schedule_matches_the_original_system():
    # The original reports 0.605, 0.366 and 0.082; exact values are 0.6058, 0.3670 and 0.0816.
    assert epsilon_at(0) == 1.0
    assert epsilon_at(100) == pytest.approx(0.605, abs=1e-3)
    assert epsilon_at(200) == pytest.approx(0.366, abs=1e-3)
    assert epsilon_at(500) == pytest.approx(0.082, abs=1e-3)
    assert epsilon_at(100) == pytest.approx(0.995**100)


def test_epsilon_floor_is_respected():
    assert epsilon_at(918) > 0.01
    assert epsilon_at(919) == 0.01
    assert epsilon_at(5000) == 0.01
    assert epsilon_at(10, start=0.5, decay=0.5, floor=0.2) == 0.2
    with pytest.raises(ValueError, match="episode"):
        epsilon_at(-1)


def test_settings_defaults_and_camel_case_aliases():
    settings = AgentSettings()
    assert (settings.episodes, settings.steps_per_episode, settings.gamma) == (1000, 500, 0.95)
    assert settings.hidden_sizes == [128, 128]
    dumped = settings.model_dump(by_alias=True)
    assert dumped["targetUpdateInterval"] == 500 and dumped["epsilonDecay"] == 0.995
    assert AgentSettings.model_validate(dumped) == settings
    assert AgentSettings.model_validate({"learningRate": 0.01}).learning_rate == 0.01
    assert AgentSettings(learning_rate=0.01).learning_rate == 0.01


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"gamma": 1.0}, "gamma"),
        ({"gamma": -0.1}, "gamma"),
        ({"epsilonDecay": 0.0}, "epsilonDecay"),
        ({"epsilonDecay": 1.5}, "epsilonDecay"),
        ({"learningRate": 0.0}, "learningRate"),
        ({"batchSize": 128, "replaySize": 100}, "batchSize"),
        ({"hiddenSizes": [64, 0]}, "hiddenSizes"),
        ({"tau": 0.0}, "tau"),
        ({"trainFrequency": 0}, "trainFrequency"),
        ({"epsilonMin": 0.5, "epsilonStart": 0.4}, "epsilonMin"),
        ({"gama": 0.9}, "gama"),  # typos in a CRD spec are errors, not silently ignored
    ],
)
def test_settings_validation_names_the_field(values, field):
    with pytest.raises(ValidationError) as error:
        AgentSettings.model_validate(values)
    assert field in str(error.value)


# --- replay -------------------------------------------------------------------------------------


def _fill(buffer: ReplayBuffer, start: int, stop: int) -> None:
    for i in range(start, stop):
        obs = np.full(buffer.observation_size, i, dtype=np.float32)
        buffer.add(obs, i % 5, float(i), obs + 0.5, i % 2 == 0)


def test_replay_ring_wraps_and_overwrites_the_oldest():
    buffer = ReplayBuffer(capacity=5, observation_size=2)
    _fill(buffer, 0, 3)
    assert len(buffer) == 3 and buffer.position == 3
    _fill(buffer, 3, 8)
    assert len(buffer) == 5 and buffer.position == 3
    assert buffer.reward.tolist() == [5.0, 6.0, 7.0, 3.0, 4.0]
    assert buffer.obs[:, 0].tolist() == [5.0, 6.0, 7.0, 3.0, 4.0]
    assert buffer.next_obs[0].tolist() == [5.5, 5.5]
    assert buffer.done.tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    recent = buffer.sample_for_checkpoint(3)
    assert recent["reward"].tolist() == [5.0, 6.0, 7.0]
    assert buffer.sample_for_checkpoint(99)["reward"].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]


def test_replay_sampling_shapes_dtypes_and_reproducibility():
    buffer = ReplayBuffer(capacity=100, observation_size=4)
    _fill(buffer, 0, 30)
    batch = buffer.sample(16, np.random.default_rng(1))
    assert batch.obs.shape == (16, 4) and batch.next_obs.shape == (16, 4)
    assert batch.obs.dtype == np.float32 and batch.next_obs.dtype == np.float32
    assert batch.action.dtype == np.int64 and batch.reward.dtype == np.float32 and batch.done.dtype == np.float32
    assert set(batch.reward.tolist()) <= set(range(30))  # only filled slots
    np.testing.assert_array_equal(batch.obs[:, 0], batch.reward)  # rows stay aligned
    again = buffer.sample(16, np.random.default_rng(1))
    np.testing.assert_array_equal(batch.action, again.action)
    out = buffer.sample(16, np.random.default_rng(1), out=again)
    assert out is again
    np.testing.assert_array_equal(out.reward, batch.reward)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4, 2).sample(1, np.random.default_rng())


def test_replay_state_dict_round_trip():
    buffer = ReplayBuffer(capacity=6, observation_size=3)
    _fill(buffer, 0, 10)  # wrapped
    copy = ReplayBuffer(capacity=6, observation_size=3)
    copy.load_state_dict(buffer.state_dict())
    assert (copy.size, copy.position) == (buffer.size, buffer.position)
    for key in ("obs", "action", "reward", "next_obs", "done"):
        np.testing.assert_array_equal(getattr(copy, key), getattr(buffer, key))
    # A smaller buffer keeps the newest transitions, in order; a larger one keeps them all.
    small = ReplayBuffer(capacity=4, observation_size=3)
    small.load_state_dict(buffer.state_dict())
    assert small.reward.tolist() == [6.0, 7.0, 8.0, 9.0] and small.position == 0
    large = ReplayBuffer(capacity=50, observation_size=3)
    large.load_state_dict(buffer.sample_for_checkpoint(4))
    assert large.reward[: len(large)].tolist() == [6.0, 7.0, 8.0, 9.0] and large.position == 4
    with pytest.raises(ValueError, match="observation size"):
        ReplayBuffer(capacity=6, observation_size=2).load_state_dict(buffer.state_dict())


# --- TD targets ---------------------------------------------------------------------------------


def test_double_dqn_target_by_hand():
    reward = torch.tensor([1.0, 0.5, -1.0])
    done = torch.tensor([0.0, 0.0, 1.0])
    next_q_online = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0], [0.0, 9.0, 0.0]])
    next_q_target = torch.tensor([[4.0, 2.0, 10.0], [1.0, 7.0, 3.0], [8.0, 8.0, 8.0]])
    gamma = 0.9
    # Double DQN: the online net picks a* = (1, 0, 1); the target net values them 2, 1, (done).
    double = td_target(reward, done, gamma, next_q_target, next_q_online)
    torch.testing.assert_close(double, torch.tensor([1.0 + 0.9 * 2.0, 0.5 + 0.9 * 1.0, -1.0]))
    # Plain DQN: max of the target net (10, 7), which double DQN deliberately avoided.
    plain = td_target(reward, done, gamma, next_q_target)
    torch.testing.assert_close(plain, torch.tensor([1.0 + 0.9 * 10.0, 0.5 + 0.9 * 7.0, -1.0]))


def _tiny_agent(double_dqn: bool) -> DQNAgent:
    """A 2-observation, 3-action linear agent with hand-set weights (hidden layer = identity)."""
    settings = AgentSettings(
        hidden_sizes=[2],
        batch_size=2,
        replay_size=8,
        learning_starts=0,
        gamma=0.5,
        double_dqn=double_dqn,
        max_grad_norm=None,
        learning_rate=0.1,
    )
    agent = DQNAgent(2, 3, settings)
    with torch.no_grad():
        heads = {agent.online: [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], agent.target: [[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]}
        for net, head in heads.items():
            first, last = net.layers[0], net.layers[2]
            first.weight.copy_(torch.eye(2))
            first.bias.zero_()
            last.weight.copy_(torch.tensor(head))
            last.bias.zero_()
    return agent


@pytest.mark.parametrize("double_dqn", [True, False])
def test_agent_update_uses_the_right_target(double_dqn):
    agent = _tiny_agent(double_dqn)
    obs = np.array([1.0, 0.0], dtype=np.float32)
    next_obs = np.array([1.0, 2.0], dtype=np.float32)  # online Q = (1, 2, 1.5) -> a* = 1
    agent.observe(Transition(obs, 0, 1.0, next_obs, False))
    agent.observe(Transition(obs, 0, 1.0, next_obs, False))
    # Target Q(next) = (2, 2, 3): double takes index 1 -> 2; plain takes the max -> 3.
    expected_target = 1.0 + 0.5 * (2.0 if double_dqn else 3.0)
    q_before = agent.q_values(obs)[0]  # = 1
    expected_loss = torch.nn.functional.smooth_l1_loss(torch.tensor(q_before), torch.tensor(expected_target))
    loss = agent.update()
    assert loss == pytest.approx(float(expected_loss))


def test_target_network_hard_and_soft_updates():
    agent = DQNAgent(3, 2, AgentSettings(hidden_sizes=[4], tau=1.0))
    with torch.no_grad():
        for p in agent.online.parameters():
            p.add_(1.0)
    agent.update_target()
    for t, o in zip(agent.target.parameters(), agent.online.parameters(), strict=True):
        torch.testing.assert_close(t, o)
    soft = DQNAgent(3, 2, AgentSettings(hidden_sizes=[4], tau=0.25))
    with torch.no_grad():
        for p in soft.online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in soft.target.parameters()]
    soft.update_target()
    for t, b in zip(soft.target.parameters(), before, strict=True):
        torch.testing.assert_close(t, b + 0.25)


def test_greedy_fast_path_agrees_with_torch():
    agent = DQNAgent(5, 7, AgentSettings(hidden_sizes=[32, 16]))
    obs = np.random.default_rng(0).random((50, 5), dtype=np.float32)
    q = agent.q_values(obs)
    assert q.shape == (50, 7) and q.dtype == np.float32
    assert [agent.greedy_action(o) for o in obs] == q.argmax(axis=1).tolist()
    np.testing.assert_allclose(agent._greedy_q(obs), q, rtol=1e-5, atol=1e-6)
    assert all(0 <= agent.act(obs[0], 1.0) < 7 for _ in range(50))
    assert len({agent.act(obs[0], 1.0) for _ in range(200)}) == 7
    assert agent.act(obs[0], 0.0) == agent.greedy_action(obs[0])


# --- training -----------------------------------------------------------------------------------

LEARN = AgentSettings(
    episodes=50,
    steps_per_episode=40,
    learning_starts=200,
    train_frequency=1,
    batch_size=32,
    replay_size=5000,
    target_update_interval=100,
    hidden_sizes=[64, 64],
    epsilon_decay=0.93,
    epsilon_min=0.05,
    learning_rate=2e-3,
    seed=3,
)


def _rollout_distances(env: GridBowl, policy, starts: range, steps: int = 30) -> list[int]:
    distances = []
    for seed in starts:
        obs = env.reset(seed=seed)
        for _ in range(steps):
            obs, _, _ = env.step(policy(obs))
        distances.append(env.distance())
    return distances


def test_agent_learns_the_grid_walk():
    env = GridBowl()
    assert isinstance(env, Environment)
    agent = DQNAgent(env.observation_size, env.action_count, LEARN)
    seen: list[EpisodeStats] = []
    result = agent.train(env, on_episode=seen.append)
    assert len(result.returns) == len(seen) == LEARN.episodes and not result.stopped_early
    assert result.total_env_steps == LEARN.episodes * LEARN.steps_per_episode == agent.env_steps
    assert result.gradient_updates == agent.gradient_updates == result.total_env_steps - LEARN.learning_starts + 1
    assert result.epsilons[10] == pytest.approx(epsilon_at(10, 1.0, 0.93, 0.05))
    assert math.isnan(result.mean_losses[0]) and not math.isnan(result.mean_losses[-1])

    starts = range(1000, 1030)  # unseen start positions
    learned = _rollout_distances(env, agent.greedy_action, starts)
    rng = np.random.default_rng(0)
    random = _rollout_distances(env, lambda _: int(rng.integers(env.action_count)), starts)
    learned_hits = sum(d <= 1 for d in learned)
    random_hits = sum(d <= 1 for d in random)
    assert learned_hits >= 24, (learned, random)  # >= 80 % end at, or one step from, the optimum
    assert learned_hits >= random_hits + 15
    assert np.mean(learned) < np.mean(random) / 3
    assert np.mean(result.returns[-5:]) > np.mean(result.returns[:5])


def test_should_stop_ends_after_the_current_step_and_resume_continues():
    env = GridBowl()
    settings = LEARN.model_copy(update={"episodes": 4, "steps_per_episode": 10, "learning_starts": 16})
    agent = DQNAgent(env.observation_size, env.action_count, settings)
    calls = {"n": 0}

    def stop_after_25_steps() -> bool:
        calls["n"] += 1
        return agent.env_steps >= 25

    result = agent.train(env, should_stop=stop_after_25_steps)
    assert result.stopped_early and result.total_env_steps == 25 and agent.env_steps == 25
    assert result.episodes == [0, 1] and agent.episodes_completed == 2
    assert len(agent.replay) == 25
    rest = agent.train(env)  # resumes at episode 2 with its epsilon
    assert rest.episodes == [2, 3] and not rest.stopped_early
    assert rest.epsilons[0] == pytest.approx(epsilon_at(2, 1.0, 0.93, 0.05))
    assert agent.env_steps == 45


@pytest.fixture
def sigint_as_at_a_terminal():
    """Python's own SIGINT handler for the test: a suite started with `cmd &` from a script inherits SIGINT
    ignored (an ignored signal stays ignored across exec), and then no Ctrl-C would ever arrive."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_keyboard_interrupt_mid_update_leaves_the_agent_consistent(monkeypatch, sigint_as_at_a_terminal):
    env = GridBowl()
    settings = LEARN.model_copy(update={"episodes": 3, "steps_per_episode": 20, "learning_starts": 32})
    agent = DQNAgent(env.observation_size, env.action_count, settings)
    original_update = agent.update

    def update_interrupted_midway():
        if agent.gradient_updates == 5:
            os.kill(os.getpid(), signal.SIGINT)  # arrives during the update: must be deferred
        return original_update()

    monkeypatch.setattr(agent, "update", update_interrupted_midway)
    with pytest.raises(KeyboardInterrupt):
        agent.train(env)
    assert agent.gradient_updates == 6  # the interrupted update completed
    assert agent.env_steps == len(agent.replay) == 32 + 5  # and its transition is stored whole
    assert agent.episodes_completed == 1  # the interrupted episode does not count
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert len(agent.last_training_result.returns) == 1
    monkeypatch.setattr(agent, "update", original_update)
    result = agent.train(env)  # and training carries on from the unfinished episode
    assert result.episodes == [1, 2]


# --- checkpoints --------------------------------------------------------------------------------


def _trained_agent() -> tuple[GridBowl, DQNAgent]:
    env = GridBowl()
    settings = LEARN.model_copy(update={"episodes": 3, "steps_per_episode": 30, "learning_starts": 40})
    agent = DQNAgent(env.observation_size, env.action_count, settings)
    agent.train(env)
    return env, agent


def test_checkpoint_round_trip_is_exact(tmp_path):
    env, agent = _trained_agent()
    normalisation = {"means": np.array([0.5, 1.5, 2.5]), "scales": [1.0, 2.0], "name": "hde"}
    checkpoint = make_checkpoint(agent, profile_hash="abc123", normalisation=normalisation)
    path = save_checkpoint(tmp_path / "agent.pt", checkpoint)
    loaded = load_checkpoint(path, profile_hash="abc123", observation_size=3, action_count=7)
    restored = loaded.to_agent()

    for a, b in zip(agent.online.state_dict().values(), restored.online.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(agent.target.state_dict().values(), restored.target.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    obs = np.random.default_rng(5).random((20, 3), dtype=np.float32)
    np.testing.assert_array_equal(agent.q_values(obs), restored.q_values(obs))
    saved_state, restored_state = agent.optimizer.state_dict(), restored.optimizer.state_dict()
    assert saved_state["param_groups"] == restored_state["param_groups"]
    for key, state in saved_state["state"].items():
        for name, value in state.items():
            assert torch.equal(value, restored_state["state"][key][name]), name
    assert (restored.episodes_completed, restored.env_steps, restored.gradient_updates) == (
        agent.episodes_completed,
        agent.env_steps,
        agent.gradient_updates,
    )
    assert restored.epsilon == agent.epsilon and restored.settings == agent.settings
    np.testing.assert_array_equal(loaded.normalisation["means"], normalisation["means"])
    assert loaded.normalisation["means"].dtype == np.float64
    assert loaded.normalisation["scales"] == [1.0, 2.0] and loaded.normalisation["name"] == "hde"

    # Everything that drives the next update was restored: both agents now take the identical step.
    loss_a, loss_b = agent.update(), restored.update()
    assert loss_a == loss_b
    for a, b in zip(agent.online.parameters(), restored.online.parameters(), strict=True):
        assert torch.equal(a, b)
    assert agent.act(obs[0], 0.5) == restored.act(obs[0], 0.5)

    # Bytes, with and without zstd, are exact too.
    for compress in (False, True):
        data = to_bytes(checkpoint, compress=compress)
        again = from_bytes(data, profile_hash="abc123")
        for key, value in checkpoint.online_state.items():
            assert torch.equal(value, again.online_state[key])
    assert len(to_bytes(checkpoint, compress=True)) < len(to_bytes(checkpoint))


def test_checkpoint_mismatch_names_what_differs(tmp_path):
    _, agent = _trained_agent()
    path = save_checkpoint(tmp_path / "agent.pt", make_checkpoint(agent, profile_hash="abc123"))
    with pytest.raises(CheckpointMismatch, match="profile_hash: checkpoint has 'abc123', expected 'zzz'"):
        load_checkpoint(path, profile_hash="zzz")
    with pytest.raises(CheckpointMismatch, match="observation_size.*action_count"):
        load_checkpoint(path, profile_hash="abc123", observation_size=39, action_count=19)
    loaded = load_checkpoint(path, profile_hash=None)
    with pytest.raises(CheckpointMismatch, match="observation_size: checkpoint has 3, expected 4"):
        loaded.restore(DQNAgent(4, 7, agent.settings))
    with pytest.raises(CheckpointMismatch, match="network shape"):
        loaded.to_agent(agent.settings.model_copy(update={"hidden_sizes": [32]}))
    with pytest.raises(CheckpointError):
        from_bytes(b"not a checkpoint", profile_hash=None)
    with pytest.raises(TypeError, match="object"):
        make_checkpoint(agent, profile_hash="x", normalisation={"bad": object()})


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    _, agent = _trained_agent()
    path = tmp_path / "agent.pt"
    save_checkpoint(path, make_checkpoint(agent, profile_hash="first"))
    good = path.read_bytes()

    agent.update()
    real_fsync = os.fsync

    def interrupted_fsync(fd):
        real_fsync(fd)
        raise KeyboardInterrupt  # Ctrl-C after the new bytes are written, before the rename

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, make_checkpoint(agent, profile_hash="second"))
    monkeypatch.setattr(os, "fsync", real_fsync)

    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.pt"]
    assert load_checkpoint(path, profile_hash="first").profile_hash == "first"

"""Heavy work in worker processes (proposers/workers.py): a twin measured and a DQN pretrained in another process,
with progress reported and a stop honoured, and the result used by the operator's proposers."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from dwcp_autotuner.models.profile import ParameterProfileSpec
from dwcp_autotuner.models.run import RunAgentSettings
from dwcp_autotuner.proposers.twin_policy import TwinPolicy
from dwcp_autotuner.proposers.workers import Workers, measure_twin_job
from tests.support.profiles import tiny_twin_spec

pytestmark = pytest.mark.slow


def _pid() -> int:
    return os.getpid()


@pytest.fixture(scope="module")
def workers():
    pool = Workers(1)
    yield pool
    pool.shutdown()


def test_jobs_run_in_another_process_and_return_a_measured_twin(workers, tmp_path):
    assert workers.submit(_pid).result(timeout=120) != os.getpid()
    profile = tiny_twin_spec("pba", "pba-config")
    twin = workers.submit(measure_twin_job, profile, 3, str(tmp_path), True).result(timeout=300)
    assert twin.grid_shape == (3, 3, 3) and twin.means.shape[-1] == len(twin.metric_names)
    assert list(tmp_path.iterdir())  # cached on disk for the next time, as tune's twins are
    # Under another live condition (a reconfiguration ten times dearer): another twin, cached beside the first.
    cached = len([f for f in tmp_path.rglob("*") if f.is_file()])
    dearer = workers.submit(measure_twin_job, profile, 3, str(tmp_path), True, {"reconfig_loss_ms": 300.0})
    other = dearer.result(timeout=300)
    assert other.provenance["options"]["reconfig_loss_ms"] == 300.0
    assert not np.allclose(other.means, twin.means) and len([f for f in tmp_path.rglob("*") if f.is_file()]) > cached


def test_a_pretraining_in_a_worker_reports_progress_and_gives_the_operator_a_trained_agent(workers, tmp_path):
    profile = ParameterProfileSpec.model_validate(tiny_twin_spec("pba", "pba-config"))
    settings = RunAgentSettings.model_validate(
        # Long enough (seconds) to span several of the policy's 0.5 s reads of the worker's progress file.
        {"seed": 1, "episodes": 300, "stepsPerEpisode": 20, "batchSize": 8, "hiddenSizes": [16], "learningStarts": 16}
    )
    policy = TwinPolicy(
        "pba", profile, settings, cache_dir=tmp_path, quick_twins=True, closed=threading.Event(), workers=workers
    )
    trained = threading.Event()
    policy.on_trained = trained.set
    seen = []
    policy.pretrain()
    deadline = time.monotonic() + 300
    while not trained.is_set() and not policy.progress.failed and time.monotonic() < deadline:
        seen.append(policy.pretrain().episodes)
        time.sleep(0.1)
    assert trained.is_set() and policy.ready, policy.progress
    assert policy.agent.gradient_updates > 0 and policy.progress.episodes == 300
    assert any(0 < e < 300 for e in seen), seen  # progress came through the worker's file while it trained
    proposal = policy.suggest(profile.default_config())
    assert proposal is None or proposal.config != profile.default_config()


def test_a_deleted_run_stops_its_workers_pretraining(workers, tmp_path):
    profile = ParameterProfileSpec.model_validate(tiny_twin_spec("pba", "pba-config"))
    settings = RunAgentSettings.model_validate(
        {"seed": 2, "episodes": 100000, "stepsPerEpisode": 50, "batchSize": 8, "hiddenSizes": [16]}
    )
    closed = threading.Event()
    policy = TwinPolicy("pba", profile, settings, cache_dir=tmp_path, quick_twins=True, closed=closed, workers=workers)
    policy.pretrain()
    deadline = time.monotonic() + 120
    while policy.pretrain().episodes < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    closed.set()
    policy.thread.join(timeout=60)
    assert not policy.thread.is_alive() and not policy.ready
    assert policy.progress.episodes < 100000 and policy.progress.env_steps < 100000 * 50

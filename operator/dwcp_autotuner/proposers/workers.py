"""Heavy work off the operator's interpreter: measuring a twin and pretraining a DQN on it, in worker processes.

Measuring a twin runs the real workload at every grid point (tens of CPU seconds to minutes) and pretraining a DQN
runs thousands of gradient updates; in the operator's own process both would share one interpreter lock with every
reconcile, and every run's ticks would come late while they ran. `Workers` is a bounded pool of worker processes
(`--workers`, default 1), started on first use with the `spawn` method (no inherited threads or locks). The jobs are
plain functions of plain arguments (JSON of the profile and settings), so the same job runs in a process here or
in a Kubernetes Job (`dwcp-autotuner worker …`):

- `measure_twin_job` returns the measured Twin (also cached on disk, like `tune`'s);
- `pretrain_job` measures (or loads) the twin, trains the DQN and returns its checkpoint bytes and the twin; it
  reports its progress to a small JSON file the operator reads for `status.training`, and stops early when a stop
  file appears (the run was deleted).

`Workers(0)` runs the jobs in a thread of the calling process instead (what library users and the tests get by
default).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..env.twin import Twin


class Workers:
    """Where heavy jobs run: `processes` worker processes, or (0) one thread of this process.

    A `multiprocessing` pool rather than a ProcessPoolExecutor: `shutdown` must end a pretraining that is still
    running when the operator stops (the executor would wait for it at exit), and the pool can terminate."""

    def __init__(self, processes: int = 1) -> None:
        if processes < 0:
            raise ValueError("processes must be >= 0")
        self.processes = processes
        self._pool = None
        self._threads: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        with self._lock:
            if self.processes == 0:
                if self._threads is None:
                    self._threads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker")
                return self._threads.submit(fn, *args, **kwargs)
            if self._pool is None:
                self._pool = multiprocessing.get_context("spawn").Pool(self.processes)
            future: Future = Future()
            future.set_running_or_notify_cancel()
            self._pool.apply_async(fn, args, kwargs, callback=future.set_result, error_callback=future.set_exception)
            return future

    def shutdown(self) -> None:
        """Stop at once: running jobs end with their worker processes (what they would return is not needed)."""
        with self._lock:
            pool, self._pool = self._pool, None
            threads, self._threads = self._threads, None
        if pool is not None:
            pool.terminate()
            pool.join()
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)


# --- the jobs (top-level functions of plain arguments: they run in another process) ------------------------
def measure_twin_job(
    profile: dict, seed: int, cache_dir: str | None, quick: bool, conditions: dict | None = None
) -> Twin | None:
    """The twin of the profile's space measured with its built-in workload (`spec.twin`), or None without one;
    `conditions`: other workload options to measure it under (one of `workloads.twin_conditions`)."""
    from ..models.profile import ParameterProfileSpec
    from .twins import measure_profile_twin

    spec = ParameterProfileSpec.model_validate(profile)
    return measure_profile_twin(
        spec, seed=seed, cache_dir=Path(cache_dir) if cache_dir else None, quick=quick, conditions=conditions
    )


def pretrain_job(
    name: str,
    profile: dict,
    settings: dict,
    cache_dir: str | None,
    quick: bool,
    progress_path: str,
    stop_path: str,
) -> tuple[bytes, Twin]:
    """Measure (or load) the profile's twin and pretrain a DQN on it: (checkpoint bytes, twin)."""
    from ..agent.checkpoint import make_checkpoint, to_bytes
    from ..agent.dqn import DQNAgent
    from ..env.tuning_env import Component, TuningEnv
    from ..env.twin import load_or_measure_twin
    from ..models.agent import AgentSettings
    from ..models.profile import ParameterProfileSpec
    from ..models.run import RunAgentSettings
    from ..workloads import make_workload

    spec = ParameterProfileSpec.model_validate(profile)
    agent_settings = RunAgentSettings.model_validate(settings)
    started = time.perf_counter()
    write_progress(progress_path, {"message": f"measuring the {spec.twin} twin (cached after the first time)"})
    twin, _ = load_or_measure_twin(
        spec.tuning_space(),
        make_workload(spec.twin, quick=quick),
        seed=agent_settings.seed,
        cache_dir=Path(cache_dir) if cache_dir else None,
    )
    env = TuningEnv(
        [Component(name, spec.tuning_space(), twin)],
        steps_per_episode=agent_settings.steps_per_episode,
        seed=agent_settings.seed,
    )
    agent = DQNAgent(env.observation_size, env.action_count, agent_settings)

    def on_episode(stats) -> None:
        write_progress(
            progress_path,
            {
                "episodes": stats.episode + 1,
                "env_steps": stats.total_env_steps,
                "last_return": round(float(stats.episode_return), 6),
                "epsilon": round(float(stats.epsilon), 6),
                "wall_seconds": round(time.perf_counter() - started, 3),
            },
        )

    agent.train(env, on_episode=on_episode, should_stop=lambda: os.path.exists(stop_path), torch_threads=1)
    checkpoint = make_checkpoint(agent, profile_hash=spec.space_hash())
    # The run's settings carry run-only fields (episodes, warmStart, …) a checkpoint does not know.
    base = AgentSettings.model_validate(agent_settings.model_dump(include=set(AgentSettings.model_fields)))
    return to_bytes(dataclasses.replace(checkpoint, settings=base)), twin


def write_progress(path: str, progress: dict) -> None:
    """Atomically (a rename), so a reader never sees half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(progress, handle)
    os.replace(tmp, path)


def read_progress(path: str) -> dict:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


# --- the same jobs as Kubernetes Jobs -------------------------------------------------------------------------
RESULT_KEY, CHECKPOINT_KEY, ERROR_KEY = "result", "checkpoint", "error"
WORKER_LABELS = {"app.kubernetes.io/managed-by": "dwcp-autotuner", "autotune.dwcp.io/worker": "true"}


class JobFailed(RuntimeError):
    """A worker Job failed; the message says why (the worker's own error, a deadline, an image that cannot be
    pulled), and ends up on the run."""


class JobWorkers:
    """`Workers` whose jobs run as Kubernetes Jobs (the operator's image, `dwcp-autotuner worker …`), for users who
    outgrow one pod: no new system to install. At most `parallelism` Jobs run at once (the others wait their turn);
    each has a deadline. The result comes back through a ConfigMap owned by the Job (the operator creates it, the
    worker fills it), so it is garbage-collected with the Job; a failure (the worker's error, the deadline, an
    image that cannot be pulled) fails the job's Future with `JobFailed` and its reason.

    Progress of a pretraining is not reported from a Job (the run shows that it runs in one)."""

    processes = 1  # "not in this thread": callers treat it like a process pool

    def __init__(
        self,
        runner,
        configs,
        namespace: str,
        *,
        parallelism: int = 2,
        deadline_seconds: int = 3600,
        poll_seconds: float = 2.0,
    ) -> None:
        self.runner, self.configs, self.namespace = runner, configs, namespace
        self.parallelism, self.deadline_seconds, self.poll_seconds = parallelism, deadline_seconds, poll_seconds
        self._slots = threading.Semaphore(parallelism)
        self._stopping = threading.Event()
        self._running: dict[str, Future] = {}
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        command, decode, stop_path = self._command(fn, args, kwargs)
        threading.Thread(
            target=self._run, args=(future, command, decode, stop_path), name="worker-job", daemon=True
        ).start()
        return future

    def shutdown(self) -> None:
        """Delete the Jobs that still run (the operator stops: their results would not be used)."""
        self._stopping.set()
        with self._lock:
            names = list(self._running)
        for name in names:
            try:
                self.runner.delete(self.namespace, name)
            except Exception:  # best effort: the deadline ends them anyway
                pass

    # --- what a job is, as a command ---------------------------------------------------------------------------
    def _command(self, fn, args, kwargs):
        from ..models.profile import ParameterProfileSpec

        call = dict(zip(fn.__code__.co_varnames[: fn.__code__.co_argcount], args), **kwargs)
        profile = call["profile"]
        space = ParameterProfileSpec.model_validate(profile).tuning_space()
        common = ["--profile-json", json.dumps(profile, separators=(",", ":"))]
        quick = ["--quick"] if call.get("quick") else []
        if fn is measure_twin_job:
            command = ["worker", "twin", *common, "--seed", str(call["seed"]), *quick]
            if call.get("conditions"):
                command += ["--conditions-json", json.dumps(call["conditions"], separators=(",", ":"))]
            return command, lambda stored: Twin.from_bytes(space, stored.binary[RESULT_KEY]), None
        if fn is pretrain_job:
            settings = json.dumps(call["settings"], separators=(",", ":"))
            command = ["worker", "pretrain", "--name", call["name"], *common, "--settings-json", settings, *quick]

            def decode(stored):
                return stored.binary[CHECKPOINT_KEY], Twin.from_bytes(space, stored.binary[RESULT_KEY])

            return command, decode, call.get("stop_path")
        raise ValueError(f"{fn.__name__} cannot run as a Kubernetes Job")

    # --- one Job, start to end ---------------------------------------------------------------------------------
    def _run(self, future: Future, command: list[str], decode, stop_path: str | None) -> None:
        from ..ports.base import JobSpec, OwnerRef

        with self._slots:
            name = f"dwcp-worker-{secrets.token_hex(5)}"
            try:
                spec = JobSpec(
                    self.namespace,
                    name,
                    (*command, "--result", f"{self.namespace}/{name}"),
                    self.deadline_seconds,
                    WORKER_LABELS,
                )
                uid = self.runner.start(spec)
                with self._lock:
                    self._running[name] = future
                owner = OwnerRef("batch/v1", "Job", name, uid)
                self.configs.put_binary(self.namespace, name, {}, data={}, owner=owner, labels=WORKER_LABELS)
                while True:
                    if self._stopping.is_set() or (stop_path and os.path.exists(stop_path)):
                        self.runner.delete(self.namespace, name)
                        raise JobFailed(f"Job {self.namespace}/{name} stopped: its run or the operator went")
                    state = self.runner.state(self.namespace, name)
                    if state.phase == "Succeeded":
                        future.set_result(decode(self.configs.get_binary(self.namespace, name)))
                        return
                    if state.phase == "Failed":
                        raise JobFailed(self._why(name, state))
                    time.sleep(self.poll_seconds)
            except BaseException as error:
                if not future.done():
                    future.set_exception(error if isinstance(error, Exception) else JobFailed(str(error)))
            finally:
                with self._lock:
                    self._running.pop(name, None)

    def _why(self, name: str, state) -> str:
        """The worker's own error when it wrote one, else the Job's reason (deadline, image, ...)."""
        try:
            written = self.configs.get_binary(self.namespace, name).data.get(ERROR_KEY)
        except Exception:
            written = None
        detail = written or state.message or "no message"
        return f"Job {self.namespace}/{name} failed ({state.reason}): {detail}"

"""Checkpoints: everything needed to resume training or serve a trained agent.

A checkpoint is one ``torch.save`` of a plain dict (tensors, numbers, strings, lists, dicts), so it
loads with ``torch.load(weights_only=True)``: loading never unpickles arbitrary objects, which
matters because checkpoints also travel through Kubernetes ConfigMaps. It holds

* online and target weights, Adam state, the :class:`AgentSettings`;
* ``profile_hash`` (the caller's hash of the parameter space: a checkpoint trained for one set of
  tunable parameters must never drive another), observation size and action count;
* the caller's observation normalisation (an opaque dict: numbers, strings, lists, dicts,
  tensors and numpy arrays, which come back as numpy arrays of the same dtype);
* progress: episodes completed, epsilon, env steps, gradient updates, both RNG states;
* a bounded replay sample: the newest ``replay_sample`` transitions (default 5,000: enough to
  resume updating at once with the default ``learning_starts``; about 88 bytes per transition
  for 9 observations, ``16 + 8 * observation_size`` in general, before compression);
* ``format_version``.

Files are written atomically (temporary file in the same directory, fsync, ``os.replace``), so an
interrupt or crash leaves either the previous checkpoint or the new one, never a torn file.
``to_bytes``/``from_bytes`` give the same bytes for other stores; ``compress=True`` wraps them in
a zstd frame, and reading detects that by its magic number. Round trips are bit exact.
"""

from __future__ import annotations

import copy
import io
import os
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.agent import AgentSettings
from .dqn import DQNAgent

FORMAT = "dwcp-autotuner/dqn-checkpoint"
FORMAT_VERSION = 1
DEFAULT_REPLAY_SAMPLE = 5_000
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_NDARRAY = "__ndarray__"


class CheckpointError(Exception):
    """The data is not a checkpoint this code can read."""


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint that does not fit what the caller is about to use it for."""


@dataclass
class Checkpoint:
    """An agent snapshot, in memory. Tensors here are copies, never the live agent's."""

    profile_hash: str
    observation_size: int
    action_count: int
    settings: AgentSettings
    online_state: dict[str, torch.Tensor]
    target_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    normalisation: dict[str, Any]
    episode: int  # episodes completed = index of the next episode to run
    epsilon: float
    env_steps: int
    gradient_updates: int
    replay: dict[str, Any]  # a ReplayBuffer state dict (numpy arrays)
    rng_state: dict[str, Any]  # numpy bit-generator states: {"action": ..., "replay": ...}
    format_version: int = FORMAT_VERSION

    # --- compatibility -------------------------------------------------------------------------

    def check(
        self,
        *,
        profile_hash: str | None = None,
        observation_size: int | None = None,
        action_count: int | None = None,
    ) -> None:
        """Raise :class:`CheckpointMismatch` naming every expectation (not ``None``) that differs."""
        problems = [
            f"{name}: checkpoint has {have!r}, expected {want!r}"
            for name, have, want in (
                ("profile_hash", self.profile_hash, profile_hash),
                ("observation_size", self.observation_size, observation_size),
                ("action_count", self.action_count, action_count),
            )
            if want is not None and have != want
        ]
        if problems:
            raise CheckpointMismatch("checkpoint does not match: " + "; ".join(problems))

    # --- agent ---------------------------------------------------------------------------------

    def restore(self, agent: DQNAgent) -> None:
        """Load weights, optimiser, replay sample, RNGs and counters into ``agent``.

        The agent keeps its own ``settings``; its network must have this checkpoint's shapes.
        """
        self.check(observation_size=agent.observation_size, action_count=agent.action_count)
        live = agent.online.state_dict()
        problems = [
            f"{key}: checkpoint {tuple(self.online_state[key].shape) if key in self.online_state else 'missing'}"
            f", agent {tuple(live[key].shape) if key in live else 'missing'}"
            for key in sorted(set(live) | set(self.online_state))
            if key not in live or key not in self.online_state or live[key].shape != self.online_state[key].shape
        ]
        if problems:
            raise CheckpointMismatch("network shape differs (hidden_sizes?): " + "; ".join(problems))
        agent.online.load_state_dict(self.online_state)  # in-place copies: live views stay valid
        agent.target.load_state_dict(self.target_state)
        agent.optimizer.load_state_dict(copy.deepcopy(self.optimizer_state))
        agent.replay.load_state_dict(self.replay)
        agent.action_rng.bit_generator.state = copy.deepcopy(self.rng_state["action"])
        agent.replay_rng.bit_generator.state = copy.deepcopy(self.rng_state["replay"])
        agent.episodes_completed = self.episode
        agent.epsilon = self.epsilon
        agent.env_steps = self.env_steps
        agent.gradient_updates = self.gradient_updates

    def to_agent(self, settings: AgentSettings | None = None) -> DQNAgent:
        """A new agent restored from this checkpoint (``settings`` defaults to the saved ones)."""
        agent = DQNAgent(self.observation_size, self.action_count, settings or self.settings)
        self.restore(agent)
        return agent

    # --- plain-dict form -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "profile_hash": self.profile_hash,
            "observation_size": self.observation_size,
            "action_count": self.action_count,
            "settings": self.settings.model_dump(mode="python"),
            "online": self.online_state,
            "target": self.target_state,
            "optimizer": self.optimizer_state,
            "normalisation": _encode(self.normalisation),
            "episode": self.episode,
            "epsilon": self.epsilon,
            "env_steps": self.env_steps,
            "gradient_updates": self.gradient_updates,
            "replay": _encode(self.replay),
            "rng_state": self.rng_state,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Checkpoint:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError("not a dwcp-autotuner DQN checkpoint")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"unsupported checkpoint format_version {version!r} (this code reads {FORMAT_VERSION})"
            )
        try:
            return cls(
                profile_hash=data["profile_hash"],
                observation_size=data["observation_size"],
                action_count=data["action_count"],
                settings=AgentSettings.model_validate(data["settings"]),
                online_state=data["online"],
                target_state=data["target"],
                optimizer_state=data["optimizer"],
                normalisation=_decode(data["normalisation"]),
                episode=data["episode"],
                epsilon=data["epsilon"],
                env_steps=data["env_steps"],
                gradient_updates=data["gradient_updates"],
                replay=_decode(data["replay"]),
                rng_state=data["rng_state"],
                format_version=version,
            )
        except KeyError as missing:
            raise CheckpointError(f"checkpoint lacks field {missing}") from None


def make_checkpoint(
    agent: DQNAgent,
    *,
    profile_hash: str,
    normalisation: dict[str, Any] | None = None,
    replay_sample: int = DEFAULT_REPLAY_SAMPLE,
) -> Checkpoint:
    """Snapshot ``agent`` (copies, so further training does not change the checkpoint)."""
    _encode(normalisation or {})  # fail now, not at save time, on an unsupported value
    return Checkpoint(
        profile_hash=profile_hash,
        observation_size=agent.observation_size,
        action_count=agent.action_count,
        settings=agent.settings,
        online_state={k: v.detach().clone() for k, v in agent.online.state_dict().items()},
        target_state={k: v.detach().clone() for k, v in agent.target.state_dict().items()},
        optimizer_state=copy.deepcopy(agent.optimizer.state_dict()),
        normalisation=copy.deepcopy(normalisation or {}),
        episode=agent.episodes_completed,
        epsilon=float(agent.epsilon),
        env_steps=agent.env_steps,
        gradient_updates=agent.gradient_updates,
        replay=agent.replay.sample_for_checkpoint(replay_sample),
        rng_state={
            "action": copy.deepcopy(agent.action_rng.bit_generator.state),
            "replay": copy.deepcopy(agent.replay_rng.bit_generator.state),
        },
    )


# --- bytes and files ---------------------------------------------------------------------------


def to_bytes(checkpoint: Checkpoint, *, compress: bool = False) -> bytes:
    """Serialise (``torch.save`` format; a zstd frame around it with ``compress=True``)."""
    buffer = io.BytesIO()
    torch.save(checkpoint.to_dict(), buffer)
    data = buffer.getvalue()
    if compress:
        import zstandard

        data = zstandard.ZstdCompressor(level=10).compress(data)
    return data


def from_bytes(
    data: bytes,
    *,
    profile_hash: str | None,
    observation_size: int | None = None,
    action_count: int | None = None,
) -> Checkpoint:
    """Deserialise (zstd detected automatically) and check the expectations that are not ``None``.

    ``profile_hash`` has no default on purpose: pass the current parameter space's hash, or
    ``None`` explicitly to skip the check (e.g. to inspect a checkpoint).
    """
    if data[:4] == _ZSTD_MAGIC:
        import zstandard

        try:
            data = zstandard.ZstdDecompressor().decompress(data)
        except zstandard.ZstdError as error:
            raise CheckpointError(f"corrupt compressed checkpoint: {error}") from error
    try:
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated/foreign data
        raise CheckpointError(f"unreadable checkpoint: {error}") from error
    checkpoint = Checkpoint.from_dict(raw)
    checkpoint.check(profile_hash=profile_hash, observation_size=observation_size, action_count=action_count)
    return checkpoint


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint, *, compress: bool = False) -> Path:
    """Write ``checkpoint`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_bytes(checkpoint, compress=compress)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:  # includes KeyboardInterrupt: never leave the temporary file behind
        with suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    with suppress(OSError):  # make the rename itself durable (best effort; not on every OS)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    profile_hash: str | None,
    observation_size: int | None = None,
    action_count: int | None = None,
) -> Checkpoint:
    """Read a checkpoint file; see :func:`from_bytes` for the checks."""
    return from_bytes(
        Path(path).read_bytes(),
        profile_hash=profile_hash,
        observation_size=observation_size,
        action_count=action_count,
    )


# --- opaque values: numpy arrays travel as tensors so weights_only loading accepts them ---------


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("object arrays cannot be stored in a checkpoint")
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"checkpoint dict keys must be str, got {key!r}")
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_encode(item) for item in value)
    if value is None or isinstance(value, bool | int | float | str | torch.Tensor):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_NDARRAY}:
            return value[_NDARRAY].numpy()
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_decode(item) for item in value)
    return value

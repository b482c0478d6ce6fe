"""The agents' models in ConfigMaps: saved after every learning step, loaded as the next run's warm start.

Storage layout (one model per ParameterProfile, owned by the profile so it is garbage-collected with it):

- ``<profile>-model``: ``data["manifest.json"]`` (format, profile hash, number of parts, total size,
  sha256 of the whole blob, when it was saved, by which run) and ``binaryData["model.zst"]``: part 0.
- ``<profile>-model-1``, ``<profile>-model-2``, …: ``binaryData["model.zst"]``: the further parts.

The blob is :func:`agent.checkpoint.to_bytes` with ``compress=True`` (a zstd frame around a
``torch.save`` that loads with ``weights_only=True``), cut into parts of at most ``PART_BYTES``
(900 KiB), so every ConfigMap stays well under the 1 MiB object limit. Parts are written first and
the manifest last, and a reader checks the sha256 of the reassembled blob: a save interrupted half
way is detected (``ModelUnreadable``) instead of loading a torn model. The manifest carries the
profile's ``space_hash``: a model trained for another parameter space is refused before its bytes
are even read (``CheckpointMismatch``, surfaced as ``ModelIncompatible``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from ..agent.checkpoint import Checkpoint, CheckpointError, CheckpointMismatch, from_bytes, to_bytes
from ..models.names import label_value, object_name
from ..ports.base import ConfigStore, NotFound, OwnerRef

PART_BYTES = 900 * 1024
MANIFEST_KEY = "manifest.json"
BLOB_KEY = "model.zst"
MANIFEST_FORMAT = "dwcp-autotuner/model-configmap"
LABEL = "autotune.dwcp.io/model"


def model_configmap_name(profile_name: str) -> str:
    """The ConfigMap holding a profile's stored model (part 0 and the manifest)."""
    return object_name(profile_name, "model", limit=240)


def _part_name(base: str, index: int) -> str:
    return base if index == 0 else f"{base}-{index}"


@dataclass
class Manifest:
    profile_hash: str
    parts: int
    size: int
    sha256: str
    saved_at: str | None = None
    run: str | None = None

    def dump(self) -> str:
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "profileHash": self.profile_hash,
                "parts": self.parts,
                "bytes": self.size,
                "sha256": self.sha256,
                "savedAt": self.saved_at,
                "run": self.run,
            },
            sort_keys=True,
        )

    @classmethod
    def parse(cls, text: str | None) -> Manifest:
        try:
            raw = json.loads(text or "")
        except json.JSONDecodeError as error:
            raise CheckpointError(f"model manifest is not JSON ({error.msg})") from None
        if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
            raise CheckpointError("not a dwcp-autotuner model ConfigMap (manifest.json missing or of another format)")
        try:
            return cls(
                str(raw["profileHash"]),
                int(raw["parts"]),
                int(raw["bytes"]),
                str(raw["sha256"]),
                raw.get("savedAt"),
                raw.get("run"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"model manifest lacks or mangles {error}") from None


def stored_model_state(
    configs: ConfigStore, namespace: str, profile_name: str, space_hash: str
) -> tuple[bool, str, str] | None:
    """Whether the profile's stored model fits its current parameter space: (fits, reason, message), None when none is stored.

    It runs at every profile re-check, so the profile says *before* the next run whether its warm start
    will load. A plain read: the API returns the whole first ConfigMap (part 0, at most 900 KiB), but
    only the manifest is parsed; the model's bytes are neither decoded nor checked here.
    """
    name = model_configmap_name(profile_name)
    try:
        stored = configs.get_binary(namespace, name)
        if LABEL not in stored.labels:
            return (
                False,
                "ModelNameTaken",
                f"ConfigMap {namespace}/{name} exists and is not a dwcp-autotuner model (no {LABEL} label): it is never "
                "modified, so this profile's models are not stored until it is renamed or deleted.",
            )
        manifest = Manifest.parse(stored.data.get(MANIFEST_KEY))
    except NotFound:
        return None
    except CheckpointError as error:
        return (
            False,
            "ModelUnreadable",
            f"ConfigMap {namespace}/{name}: {error}; the next run starts without it and replaces it.",
        )
    saved = f"saved {manifest.saved_at or 'at an unknown time'}" + (f" by run {manifest.run}" if manifest.run else "")
    if manifest.profile_hash != space_hash:
        return (
            False,
            "ModelIncompatible",
            (
                f"the model in ConfigMap {namespace}/{name} ({saved}) was trained for parameter space {manifest.profile_hash}; "
                f"the profile's space is now {space_hash}: the next run starts without it and replaces it."
            ),
        )
    return (
        True,
        "ModelCompatible",
        f"ConfigMap {namespace}/{name} ({saved}, {manifest.size} bytes in {manifest.parts} part(s)) fits the parameter space.",
    )


class ModelStore:
    """Save and load checkpoints through a ConfigStore's binary ConfigMaps."""

    def __init__(
        self,
        configs: ConfigStore,
        namespace: str,
        *,
        owner_of: Callable[[str], OwnerRef | None] = lambda profile: None,
        run: str | None = None,
        part_bytes: int = PART_BYTES,
    ) -> None:
        self.configs, self.namespace, self.owner_of, self.run, self.part_bytes = (
            configs,
            namespace,
            owner_of,
            run,
            part_bytes,
        )

    def save(
        self, profile_name: str, checkpoint: Checkpoint, *, name: str | None = None, now: dt.datetime | None = None
    ) -> str:
        """Write the model; returns the name of its (first) ConfigMap."""
        base = name or model_configmap_name(profile_name)
        blob = to_bytes(checkpoint, compress=True)
        parts = [blob[i : i + self.part_bytes] for i in range(0, len(blob), self.part_bytes)] or [b""]
        owner = self.owner_of(profile_name)
        labels = {LABEL: label_value(profile_name)}
        for index in range(len(parts) - 1, 0, -1):  # further parts first, the manifest last
            self.configs.put_binary(
                self.namespace, _part_name(base, index), {BLOB_KEY: parts[index]}, owner=owner, labels=labels
            )
        saved_at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        manifest = Manifest(
            checkpoint.profile_hash, len(parts), len(blob), hashlib.sha256(blob).hexdigest(), saved_at, self.run
        )
        self.configs.put_binary(
            self.namespace, base, {BLOB_KEY: parts[0]}, data={MANIFEST_KEY: manifest.dump()}, owner=owner, labels=labels
        )
        return base

    def load(self, name: str, *, profile_hash: str | None) -> Checkpoint:
        """The stored checkpoint; raises NotFound, CheckpointMismatch (another space) or CheckpointError."""
        stored = self.configs.get_binary(self.namespace, name)
        if LABEL not in stored.labels:
            raise CheckpointError(f"ConfigMap {self.namespace}/{name} is not a dwcp-autotuner model (no {LABEL} label)")
        binary = stored.binary
        manifest = Manifest.parse(stored.data.get(MANIFEST_KEY))
        if profile_hash is not None and manifest.profile_hash != profile_hash:
            raise CheckpointMismatch(
                f"model {self.namespace}/{name} was trained for parameter space {manifest.profile_hash}, "
                f"the profile's space is now {profile_hash}"
            )
        chunks = [binary.get(BLOB_KEY, b"")]
        for index in range(1, manifest.parts):
            try:
                chunks.append(
                    self.configs.get_binary(self.namespace, _part_name(name, index)).binary.get(BLOB_KEY, b"")
                )
            except NotFound:
                raise CheckpointError(
                    f"model {self.namespace}/{name}: part {index} of {manifest.parts} is missing"
                ) from None
        blob = b"".join(chunks)
        if len(blob) != manifest.size or hashlib.sha256(blob).hexdigest() != manifest.sha256:
            raise CheckpointError(f"model {self.namespace}/{name}: parts do not match the manifest (interrupted save?)")
        return from_bytes(blob, profile_hash=profile_hash)


# --- the index: which models a namespace holds, so a new profile can find a similar one ----------------------
INDEX_NAME = "dwcp-autotuner-models"
INDEX_LABEL = "autotune.dwcp.io/model-index"


def parameter_signature(parameters) -> str:
    """What makes two profiles' models transferable: the same parameter names and types (bounds may differ)."""
    return ",".join(sorted(f"{p.name}:{p.type}" for p in parameters))


class ModelIndex:
    """One ConfigMap per namespace listing the stored models (a key per profile), kept by the operator.

    The operator may not list ConfigMaps (it reads each by name), so a model of a similar profile is found
    through this index: each save records the profile's parameter signature, its model's name and size."""

    def __init__(self, configs: ConfigStore, namespace: str) -> None:
        self.configs, self.namespace = configs, namespace

    def record(self, profile_name: str, signature: str, model: str, observations: int) -> None:
        entry = json.dumps({"signature": signature, "model": model, "observations": observations}, sort_keys=True)
        self.configs.put_binary(
            self.namespace,
            INDEX_NAME,
            {},
            data={label_value(profile_name): entry},
            owner=None,
            labels={INDEX_LABEL: "true"},
        )

    def similar(self, profile_name: str, signature: str) -> list[tuple[str, dict]]:
        """Other profiles' models with the same signature, the most observed first."""
        try:
            stored = self.configs.get_binary(self.namespace, INDEX_NAME)
        except NotFound:
            return []
        found = []
        for key, text in stored.data.items():
            try:
                entry = json.loads(text)
            except ValueError:
                continue
            if key != label_value(profile_name) and isinstance(entry, dict) and entry.get("signature") == signature:
                found.append((key, entry))
        return sorted(found, key=lambda item: -int(item[1].get("observations", 0)))

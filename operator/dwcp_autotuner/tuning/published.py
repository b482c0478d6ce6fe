"""The original DWCP v3 document's published figures, beside what our reference workloads measure at the same settings.

The built-in defaults are the original system's "before" configuration (models/builtin.py); the document
reports what its own changes did. `tune` measures the same settings with our workloads (fresh real runs, the
other parameters at their defaults) and its report sets the two side by side, with a sentence on where and why
they differ: our workloads are small, single-process stand-ins for the real services, so their absolute
figures are not the document's; the direction of a change is what can be compared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Figure:
    metric: str
    before: float | None  # published at the "before" setting (None: not published)
    after: float | None  # published at the changed setting
    unit: str = ""


@dataclass(frozen=True)
class Published:
    component: str
    setting: str  # as the document states it
    change: Mapping[str, object]  # the changed parameters (the rest at the built-in defaults)
    figures: tuple[Figure, ...] = ()
    why: Callable[[dict, dict], str] = field(default=lambda before, after: "")


# The document's figures that the sentences below also quote.
_HDE_RATIO = Figure("compression_ratio", 2.87, 3.47)
_PBA_ACCURACY = Figure("accuracy", None, 0.943)


def _direction(before: float, after: float) -> str:
    if after > before * 1.01:
        return "rises"
    if after < before * 0.99:
        return "falls"
    return "stays within 1 %"


def _hde_why(before: dict, after: dict) -> str:
    speed = _direction(before["throughput_mbps"], after["throughput_mbps"])
    ratio = _direction(before["compression_ratio"], after["compression_ratio"])
    text = (
        f"Here the compression speed {speed} and the ratio {ratio} from level 5 to 6. Our absolute figures are "
        "another scale: one Python process compressing a synthetic snapshot (many unchanged and repetitive "
        "chunks, hence far higher ratios) on a shared 2-core machine, where the document measured its own "
        "pipeline on real memory snapshots."
    )
    if ratio != "rises":
        text += (
            " On data this repetitive level 6 finds little that level 5 left, where the document's "
            f"{(_HDE_RATIO.after / _HDE_RATIO.before - 1) * 100:+.0f} % ratio is on real memory pages."
        )
    if speed != "rises":
        text += (
            " A higher zstd level is not faster on one core, so the published speed-up at level 6 points to "
            "something else that changed in that measurement (parallel streams, a faster link)."
        )
    return text


def _pba_why(before: dict, after: dict) -> str:
    accuracy = _direction(before["accuracy"], after["accuracy"])
    text = (
        f"Here accuracy (1 − the mean absolute percentage error per second) {accuracy} from 30 s to 60 s. Our "
        "demand is a synthetic trace (a daily cycle, bursts and noise) far burstier per second than the "
        "aggregated link demand the document predicted, so every window scores lower than its "
        f"{_PBA_ACCURACY.after * 100:.1f} %"
    )
    if accuracy == "falls":
        return (
            text
            + "; and a longer window follows our trace's level shifts later, which steadier traffic does not punish."
        )
    if accuracy == "rises":
        return text + "; the longer window helps in both."
    return text + "; here the window's length barely matters, where the document reports 60 s as the better one."


def _acp_why(before: dict, after: dict) -> str:
    throughput = _direction(before["throughput_rps"], after["throughput_rps"])
    return (
        f"Here throughput {throughput} from batches of 25 to 47 (messages per request "
        f"{before['messages_per_request']:.2f} → {after['messages_per_request']:.2f}): a larger batch spreads "
        "one round's messages over more requests. Our simulated group has two faulty replicas and a 10 s client "
        "timeout, so its latencies are not the document's; at our optimum (models/builtin.py) batches of 25–50 "
        "are near-ties, and a shorter view-change timeout matters more than the batch."
    )


PUBLISHED: tuple[Published, ...] = (
    Published(
        "hde",
        "compression level 5 → 6",
        {"compression_level": 6},
        (Figure("throughput_mbps", 487.0, 612.0, "MB/s"), _HDE_RATIO),
        _hde_why,
    ),
    Published("pba", "prediction window 30 s → 60 s", {"prediction_window": 60}, (_PBA_ACCURACY,), _pba_why),
    Published(
        "acp",
        "batch size 25 → 47",
        {"batch_size": 47},
        (Figure("throughput_rps", None, None, "req/s"), Figure("messages_per_request", None, None)),
        _acp_why,
    ),
)


def measure_published(component: str, workload, default: dict, seed: int, runs: int = 3) -> list[dict]:
    """Each published change of `component`: our workload's means at the default and at the changed setting."""
    out = []
    for entry in (p for p in PUBLISHED if p.component == component):
        changed = {**default, **entry.change}
        before = _means([workload.run(default, seed + i) for i in range(runs)])
        after = _means([workload.run(changed, seed + i) for i in range(runs)])
        out.append(
            {
                "setting": entry.setting,
                "config": changed,
                "runs": runs,
                "figures": [
                    {
                        "metric": f.metric,
                        "unit": f.unit,
                        "published_before": f.before,
                        "published_after": f.after,
                        "ours_before": round(before[f.metric], 4),
                        "ours_after": round(after[f.metric], 4),
                    }
                    for f in entry.figures
                ],
                "why": entry.why(before, after),
            }
        )
    return out


def _means(runs: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}

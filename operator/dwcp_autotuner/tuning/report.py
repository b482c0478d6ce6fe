"""The report of a `tune` run: report.json (machine-readable), report.md (for people), PNG plots.

report.json keeps stable names that scripts rely on: `components.<name>.fraction_of_optimum`,
`components.<name>.p_value`, `components.<name>.improvement_pct`. A partial (interrupted) run
writes the same files with `status: "interrupted"` and nulls where a phase did not finish.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
from pathlib import Path

import numpy as np

from .pipeline import ComponentResult, TuneResult, mean_metrics

REPORT_VERSION = 1


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def component_json(comp: ComponentResult, result: TuneResult) -> dict:
    verdict = comp.verdict
    base_metrics = mean_metrics(comp.baseline_runs)
    tuned_metrics = mean_metrics(comp.tuned_runs)
    scores = verdict.objective if verdict else None
    return {
        "baseline": {
            "config": comp.space.default_config(),
            "metrics": {k: _num(v) for k, v in base_metrics.items()},
            "score": _num(scores.baseline.mean) if scores else None,
            "twin_score": _num(comp.baseline_twin_score),
        },
        "tuned": {
            "config": comp.tuned_config,
            "metrics": {k: _num(v) for k, v in tuned_metrics.items()},
            "score": _num(scores.candidate.mean) if scores else None,
            "twin_score": _num(comp.tuned_twin_score),
        },
        "optimum": {"config": comp.optimum_config, "twin_score": _num(comp.optimum_score)},
        "local_optimum": comp.local_optimum_note(),
        "improvement_pct": _num(verdict.improvement_pct if verdict else None, 3),
        "fraction_of_optimum": _num(comp.fraction_of_optimum, 4),
        "p_value": None if verdict is None or verdict.p_value is None else float(verdict.p_value),
        "verdict": None
        if verdict is None
        else {"phase": verdict.phase, "reason": verdict.reason, "message": verdict.message},
        "verify_samples": len(comp.tuned_runs),
        "significance": result.options.analysis.significance,
        "episodes": result.training.get("episodes"),
        "wall_seconds": _num(comp.twin_seconds + comp.verify_seconds + result.training.get("wall_seconds", 0.0), 2),
        "twin": None
        if comp.twin is None
        else {
            "grid_points": int(np.prod(comp.twin.grid_shape)),
            "from_cache": comp.twin_from_cache,
            "measure_seconds": _num(comp.twin_seconds, 2),
            "noise_cv": dict(zip(comp.twin.metric_names, (round(float(x), 4) for x in comp.twin.noise_cv))),
            "provenance": comp.twin.provenance,
        },
        "sensitivity": {name: [[v, _num(s)] for v, s in pts] for name, pts in comp.sensitivity.items()},
        "published": comp.published,
    }


def report_json(result: TuneResult) -> dict:
    opts = result.options
    return {
        "report_version": REPORT_VERSION,
        "status": result.status,
        "phase_reached": result.phase,
        "started": _dt.datetime.fromtimestamp(result.started, _dt.UTC).isoformat(timespec="seconds"),
        "wall_seconds": _num((result.finished or result.started) - result.started, 2),
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)",
        "settings": {
            "components": list(opts.spaces),
            "seed": opts.seed,
            "quick": opts.quick,
            "link_mbps": opts.link_mbps,
            "verify_samples": opts.verify_samples,
            "analysis": opts.analysis.dump(),
            "agent": opts.agent.model_dump(mode="json", by_alias=True),
        },
        "environment": result.environment,
        "training": result.training,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "components": {name: component_json(comp, result) for name, comp in result.components.items()},
    }


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return str(value)


def report_markdown(data: dict) -> str:
    lines = ["# dwcp-autotuner tune report", ""]
    status = data["status"]
    lines.append(
        f"Status: **{status}**" + ("" if status == "complete" else f" (stopped during {data['phase_reached']})")
    )
    settings = data["settings"]
    lines.append(
        f"Seed {settings['seed']}, {'quick preset, ' if settings['quick'] else ''}link {settings['link_mbps']} Mbit/s, "
        f"{settings['verify_samples']} verification runs per variant, significance {settings['analysis'].get('significance')}, "
        f"machine {data['machine']}, wall time {_fmt(data['wall_seconds'])} s."
    )
    training = data.get("training") or {}
    env = data.get("environment") or {}
    if training:
        lines.append(
            f"Training: {training.get('episodes')} episodes, {training.get('env_steps', '–')} environment steps, "
            f"{training.get('gradient_updates', '–')} gradient updates in {_fmt(training.get('wall_seconds'))} s; "
            f"state {env.get('observation_size')} dimensions, {env.get('action_count')} actions."
        )
    lines += [
        "",
        "## Summary",
        "",
        "| component | improvement | p-value | verdict | fraction of twin optimum |",
        "|---|---|---|---|---|",
    ]
    for name, comp in data["components"].items():
        verdict = comp["verdict"] or {}
        imp, frac = comp["improvement_pct"], comp["fraction_of_optimum"]
        imp_text = "–" if imp is None else f"{imp:+.1f} %"
        frac_text = "–" if frac is None else f"{frac * 100:.1f} %"
        lines.append(f"| {name} | {imp_text} | {_fmt(comp['p_value'])} | {verdict.get('reason', '–')} | {frac_text} |")
    for name, comp in data["components"].items():
        lines += ["", f"## {name}", ""]
        if comp["verdict"]:
            lines.append(comp["verdict"]["message"])
            lines.append("")
        lines += ["| parameter | default | tuned | twin optimum |", "|---|---|---|---|"]
        base_cfg, tuned_cfg, opt_cfg = (
            comp["baseline"]["config"],
            comp["tuned"]["config"] or {},
            comp["optimum"]["config"] or {},
        )
        for param in base_cfg:
            lines.append(
                f"| {param} | {_fmt(base_cfg[param])} | {_fmt(tuned_cfg.get(param))} | {_fmt(opt_cfg.get(param))} |"
            )
        lines += ["", "| metric (mean of real runs) | default | tuned | change |", "|---|---|---|---|"]
        base_m, tuned_m = comp["baseline"]["metrics"], comp["tuned"]["metrics"]
        for metric, base in base_m.items():
            tuned = tuned_m.get(metric)
            change = "–" if base in (None, 0) or tuned is None else f"{(tuned - base) / abs(base) * 100:+.1f} %"
            lines.append(f"| {metric} | {_fmt(base)} | {_fmt(tuned)} | {change} |")
        imp = comp["improvement_pct"]
        imp_text = "–" if imp is None else f"{imp:+.1f} %"
        lines.append(f"| **score** | {_fmt(comp['baseline']['score'])} | {_fmt(comp['tuned']['score'])} | {imp_text} |")
        twin = comp.get("twin") or {}
        if twin:
            prov = twin["provenance"]
            lines += [
                "",
                f"Twin: {twin['grid_points']} grid points measured on {prov.get('machine')} at {prov.get('date')} "
                f"(seed {prov.get('seed')}{', loaded from cache' if twin['from_cache'] else ''}). "
                f"On the twin the default scores {_fmt(comp['baseline']['twin_score'])}, the tuned configuration "
                f"{_fmt(comp['tuned']['twin_score'])} and the exhaustive optimum {_fmt(comp['optimum']['twin_score'])}.",
            ]
        fraction = comp["fraction_of_optimum"]
        if fraction is not None and fraction < 0.98:
            why = comp.get("local_optimum") or (
                "The learned policy's rollouts did not reach the best grid point within the budget."
            )
            lines.append(
                f"\n**Below 98 % of the optimum** ({fraction * 100:.1f} %). {why} A larger budget (more episodes), a "
                "slower epsilon decay or a larger discount (gamma) lets the agent learn to cross such dips."
            )
        p = comp["p_value"]
        if comp["verdict"] and comp["verdict"]["phase"] != "Successful":
            lines.append(
                f"\n**Not verified at p < {data['settings']['analysis'].get('significance')}** (p = {_fmt(p)}): "
                f"{comp['verdict']['message']} On real runs the difference did not reach the required evidence; "
                "more verification runs (--verify-samples) or a quieter machine may settle it."
            )
        lines += ["", f"![sensitivity](sensitivity-{name}.png)"]
    lines += _published_markdown(data)
    lines += [
        "",
        "## Training",
        "",
        "![learning curve](learning_curve.png)",
        "",
        "![epsilon](epsilon.png)",
        "",
        "![loss](loss.png)",
        "",
    ]
    if data.get("checkpoint"):
        lines.append(f"Checkpoint: `{data['checkpoint']}`.")
    return "\n".join(lines) + "\n"


def _published_markdown(data: dict) -> list[str]:
    """The original document's figures beside our workloads' at the same settings (tuning/published.py)."""
    entries = [(name, entry) for name, comp in data["components"].items() for entry in comp.get("published") or []]
    if not entries:
        return []
    lines = [
        "",
        "## The original document's figures beside ours",
        "",
        "Measured with our workloads at the same settings, the other parameters at the built-in defaults "
        '(the original system\'s "before" configuration), mean of fresh runs.',
        "",
        "| component | setting | metric | published | ours |",
        "|---|---|---|---|---|",
    ]
    for name, entry in entries:
        for f in entry["figures"]:
            unit = f" {f['unit']}" if f["unit"] else ""
            published = (
                " → ".join(_fmt(v) for v in (f["published_before"], f["published_after"]) if v is not None) or "–"
            )
            lines.append(
                f"| {name} | {entry['setting']} | {f['metric']} | {published}{unit if published != '–' else ''} | "
                f"{_fmt(f['ours_before'])} → {_fmt(f['ours_after'])}{unit} |"
            )
    lines.append("")
    lines += [f"- **{name}, {entry['setting']}.** {entry['why']}" for name, entry in entries]
    return lines


def write_plots(result: TuneResult, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    history = result.history
    episodes = np.arange(1, len(history["return"]) + 1)

    def save(fig, name: str) -> None:
        path = folder / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    if len(episodes):
        returns = np.array(history["return"])
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(episodes, returns, color="#9ecae1", linewidth=0.8, label="episode return")
        window = max(1, len(returns) // 20)
        if window > 1:
            smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
            ax.plot(episodes[window - 1 :], smooth, color="#08519c", label=f"mean of {window}")
        ax.set(xlabel="episode", ylabel="return", title="Learning curve")
        ax.legend()
        save(fig, "learning_curve.png")

        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(episodes, history["epsilon"], color="#31a354")
        ax.set(xlabel="episode", ylabel="epsilon", title="Exploration (epsilon)")
        save(fig, "epsilon.png")

        fig, ax = plt.subplots(figsize=(7, 3))
        loss = np.array(history["loss"], dtype=float)
        ax.plot(episodes, loss, color="#de2d26")
        if np.nanmin(loss, initial=np.inf) > 0:
            ax.set_yscale("log")
        ax.set(xlabel="episode", ylabel="mean Huber loss", title="Training loss")
        save(fig, "loss.png")

    for name, comp in result.components.items():
        if not comp.sensitivity:
            continue
        params = list(comp.sensitivity)
        fig, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params), 3.2), squeeze=False)
        for ax, param in zip(axes[0], params):
            points = comp.sensitivity[param]
            xs = [str(v) if isinstance(v, str) else v for v, _ in points]
            ys = [s for _, s in points]
            spec = comp.space.parameter(param)
            ax.plot(range(len(xs)) if isinstance(xs[0], str) else xs, ys, marker="o", markersize=3)
            if spec.scale == "log2":
                ax.set_xscale("log", base=2)
            tuned = comp.tuned_config[param] if comp.tuned_config else None
            if tuned is not None and not isinstance(tuned, str):
                ax.axvline(tuned, color="#08519c", linestyle="--", linewidth=1, label="tuned")
            default = spec.default
            if not isinstance(default, str):
                ax.axvline(default, color="#969696", linestyle=":", linewidth=1, label="default")
            ax.set(xlabel=param, ylabel="score (twin)")
            ax.legend(fontsize=7)
        fig.suptitle(f"{name}: score when one parameter moves, others at the tuned values")
        save(fig, f"sensitivity-{name}.png")
    return written


def write_report(result: TuneResult) -> dict:
    folder = result.options.output
    folder.mkdir(parents=True, exist_ok=True)
    data = report_json(result)
    (folder / "report.json").write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    write_plots(result, folder)
    (folder / "report.md").write_text(report_markdown(data))
    return data


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)

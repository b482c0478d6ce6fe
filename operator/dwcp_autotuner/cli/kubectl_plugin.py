"""`kubectl autotune`: a kubectl plugin (the console script `kubectl-autotune`) to watch and steer runs.

    kubectl autotune get [RUN]            the runs, or one run as a tree: profiles, proposals, steps, verdicts
    kubectl autotune promote RUN          promote the canary out now (or approve one that waits for approval)
    kubectl autotune abort RUN            withdraw the canary out and end the run (phase Aborted)
    kubectl autotune retry RUN            start an ended run again
    kubectl autotune pause RUN            spec.paused: true
    kubectl autotune resume RUN           spec.paused: false

promote, abort and retry set the run's `autotune.dwcp.io/<action>` annotation to a new value (the time), which the
operator acts on once (controller/manual.py); pause and resume patch `spec.paused`. Both are what a GitOps tool
or `kubectl annotate`/`kubectl patch` would do, so the plugin holds no state and needs no more RBAC than that.
kubectl runs the plugin with its own arguments: `-n`, `--kubeconfig` and `--context` work as for kubectl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Mapping, Sequence

from ..models.base import GROUP, VERSION
from ..models.run import ABORT_ANNOTATION, PROMOTE_ANNOTATION, RETRY_ANNOTATION

RUNS = "optimizationruns"
ACTIONS = {"promote": PROMOTE_ANNOTATION, "abort": ABORT_ANNOTATION, "retry": RETRY_ANNOTATION}


class PluginError(Exception):
    """A user-facing error: one line, exit code 1 (kubectl's own convention for failed commands)."""


# --- rendering (pure: a run object in, text out) -----------------------------------------------------------
def _condition(status: Mapping, type_: str) -> Mapping | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def _score(measured: Mapping | None) -> str:
    score = (measured or {}).get("score")
    return "n/a" if score is None else f"{score:.4g}"


def _step_line(step: Mapping, steps: int) -> str:
    p = step.get("pValue")
    p_text = "" if p is None else f"  p(better)={p:.2g}"
    guards = step.get("guards") or []
    guard_text = "" if not guards else "  guards " + ", ".join(f"{g['metric']} {g['status']}" for g in guards)
    canary, stable = step.get("canary") or {}, step.get("stable") or {}
    return (
        f"step {step.get('index', 0) + 1}/{steps}  {step.get('weight')} %  {step.get('verdict')} ({step.get('reason')})"
        f"  score canary {_score(canary)} vs stable {_score(stable)}  n={canary.get('n', 0)}/{stable.get('n', 0)}"
        f"{p_text}{guard_text}"
    )


def _proposal_line(record: Mapping) -> str:
    gain = record.get("improvementPct")
    gain_text = "" if gain is None else f"  {gain:+.2f} %"
    config = ", ".join(f"{k}={v}" for k, v in sorted((record.get("config") or {}).items()))
    return f"#{record.get('number')} {record.get('verdict')} ({record.get('reason')}){gain_text}  {config}"


def _tree(lines: list[tuple[int, str]]) -> list[str]:
    """(depth, text) rows to box-drawing lines, like `kubectl argo rollouts get`."""
    out = []
    for i, (depth, text) in enumerate(lines):
        if depth == 0:
            out.append(text)
            continue
        prefix = ""
        for level in range(1, depth):
            more = any(d == level for d, _ in _until_shallower(lines, i, level))
            prefix += "│   " if more else "    "
        last = not any(d == depth for d, _ in _until_shallower(lines, i, depth))
        out.append(prefix + ("└── " if last else "├── ") + text)
    return out


def _until_shallower(lines: list[tuple[int, str]], i: int, depth: int):
    """The rows after row i up to (not including) the next row shallower than `depth`."""
    for d, text in lines[i + 1 :]:
        if d < depth:
            return
        yield d, text


def render_run(obj: Mapping) -> str:
    """One run as a summary and a tree: profiles, their proposals (newest last), each proposal's steps."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    summary = status.get("summary") or {}
    progressing = _condition(status, "Progressing") or {}
    degraded = _condition(status, "Degraded") or {}
    steps = len((spec.get("rollout") or {}).get("steps") or [5, 25, 50, 100])
    head = [
        f"Name:         {meta.get('name')}",
        f"Namespace:    {meta.get('namespace')}",
        f"Phase:        {status.get('phase', 'Pending')}"
        + (f"  (Progressing: {progressing.get('reason')})" if progressing else "")
        + ("  PAUSED" if spec.get("paused") else ""),
        f"Proposals:    {summary.get('proposals') or '-'}",
        f"Improvement:  {summary.get('improvement') or '-'}",
    ]
    if degraded.get("status") == "True":
        head.append(f"Degraded:     {degraded.get('reason')}: {degraded.get('message', '')}")
    head.append(f"Message:      {status.get('message') or '-'}")
    rows: list[tuple[int, str]] = [(0, f"OptimizationRun {meta.get('name')}")]
    history = status.get("history") or []
    current = status.get("current")
    improvements = status.get("improvements") or {}
    for profile in spec.get("profiles") or []:
        gain = improvements.get(profile)
        rows.append((1, f"profile {profile}" + ("" if gain is None else f"  (improvement {gain:+.1f} %)")))
        for record in [r for r in history if r.get("profile") == profile]:
            rows.append((2, _proposal_line(record)))
            rows.extend((3, _step_line(s, steps)) for s in record.get("steps") or [])
        if current and current.get("profile") == profile:
            state = "awaiting approval" if current.get("awaitingApproval") else "canary out"
            weight = current.get("canaryWeight", 0)
            rows.append(
                (2, f"#{current.get('number')} {state} at {weight} % (step {current.get('stepIndex', 0) + 1}/{steps})")
            )
            rows.extend((3, _step_line(s, steps)) for s in current.get("steps") or [])
    manual = (status.get("manual") or {}).get("last")
    if manual:
        head.append(f"Last action:  {manual}")
    return "\n".join(head + [""] + _tree(rows)) + "\n"


def render_list(items: Sequence[Mapping]) -> str:
    rows = [("NAME", "PHASE", "PROFILE", "STEP", "PROPOSALS", "IMPROVEMENT")]
    for obj in items:
        status = obj.get("status") or {}
        summary = status.get("summary") or {}
        rows.append(
            (
                (obj.get("metadata") or {}).get("name", ""),
                str(status.get("phase", "Pending")),
                summary.get("profile") or "-",
                summary.get("step") or "-",
                summary.get("proposals") or "-",
                summary.get("improvement") or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows) + "\n"


# --- the API ---------------------------------------------------------------------------------------------
def _api(args: argparse.Namespace):
    import kubernetes
    import yaml

    try:
        kubernetes.config.load_kube_config(config_file=args.kubeconfig, context=args.context)
        namespace = args.namespace
        if namespace is None:
            _, active = kubernetes.config.list_kube_config_contexts(config_file=args.kubeconfig)
            if args.context:
                contexts, _ = kubernetes.config.list_kube_config_contexts(config_file=args.kubeconfig)
                active = next((c for c in contexts if c["name"] == args.context), active)
            namespace = (active.get("context") or {}).get("namespace") or "default"
    # a kubeconfig that is not YAML, or YAML of another shape, fails inside the client with one of the others
    except (kubernetes.config.ConfigException, yaml.YAMLError, OSError, TypeError, AttributeError, KeyError) as error:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            source = args.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            reason = " ".join(str(error).split()) or type(error).__name__
            raise PluginError(f"no cluster to talk to: kubeconfig {source}: {reason}; and not inside a pod") from None
        namespace = args.namespace or "default"
    return kubernetes.client.CustomObjectsApi(), namespace


def _call(what: str, fn, *a, **kw):
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError, MaxRetryError

    try:
        return fn(*a, **kw)
    except ApiException as error:
        if error.status == 404:
            raise PluginError(f"{what}: not found") from None
        raise PluginError(f"{what}: {error.status} {error.reason}") from None
    except (OSError, HTTPError) as error:  # connection refused, DNS, TLS: urllib3 wraps them after its retries
        reason = error.reason if isinstance(error, MaxRetryError) and error.reason is not None else error
        raise PluginError(f"{what}: cannot reach the API server ({_one_line(reason)})") from None


def _one_line(error: object) -> str:
    """urllib3's reasons start with the connection object's repr; what follows says what went wrong."""
    text = " ".join(str(error).split())
    return text.split(">: ", 1)[1] if text.startswith("<") and ">: " in text else text


def run(args: argparse.Namespace) -> str:
    if args.namespace is not None and not args.namespace.strip():
        raise PluginError("-n/--namespace: empty (leave it out for the context's namespace)")
    custom, namespace = _api(args)
    where = f"optimizationrun {namespace}/{args.run}" if getattr(args, "run", None) else f"namespace {namespace}"
    if args.command == "get":
        if args.run is None:
            listed = _call(where, custom.list_namespaced_custom_object, GROUP, VERSION, namespace, RUNS)
            return render_list(listed.get("items") or [])
        return render_run(_call(where, custom.get_namespaced_custom_object, GROUP, VERSION, namespace, RUNS, args.run))
    if args.command in ("pause", "resume"):
        body = {"spec": {"paused": args.command == "pause"}}
        what = "paused" if args.command == "pause" else "resumed"
    else:
        value = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {"metadata": {"annotations": {ACTIONS[args.command]: value}}}
        what = f"{args.command} requested ({ACTIONS[args.command]}={value})"
    _call(
        where,
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        RUNS,
        args.run,
        body,
        _content_type="application/merge-patch+json",
    )
    return f"optimizationrun {namespace}/{args.run} {what}\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl autotune", description="Watch and steer dwcp-autotuner OptimizationRuns."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="the run's namespace (default: the context's)")
    common.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    common.add_argument("--context", help="kubeconfig context")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    get = sub.add_parser("get", parents=[common], help="list runs, or show one as a tree")
    get.add_argument("run", nargs="?", help="a run's name")
    for name, text in (
        ("promote", "promote the canary out now (approves one waiting for approval)"),
        ("abort", "withdraw the canary out and end the run"),
        ("retry", "start an ended (or aborted) run again"),
        ("pause", "pause the run (spec.paused: true)"),
        ("resume", "resume a paused run (spec.paused: false)"),
    ):
        sub.add_parser(name, parents=[common], help=text).add_argument("run", help="the run's name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sys.stdout.write(run(args))
    except PluginError as error:
        print(f"kubectl autotune {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

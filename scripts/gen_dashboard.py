"""Write charts/dwcp-autotuner/dashboards/dwcp-autotuner.json: the operator's Grafana dashboard.

The panels are listed here once, as data, so the dashboard and tests/test_dashboard.py (which runs every
panel's query against a real Prometheus scraping a real operator) cannot drift apart.
    python scripts/gen_dashboard.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "charts" / "dwcp-autotuner" / "dashboards" / "dwcp-autotuner.json"
SEL = 'namespace=~"$namespace", run=~"$run"'
DS = {"type": "prometheus", "uid": "${datasource}"}

# (type, title, description, [(expr, legend)], unit, width, height)
PANELS = [
    (
        "stat",
        "Phase",
        "Each run's phase now.",
        [(f"max by (namespace, run, phase) (dwcp_autotuner_run_phase{{{SEL}}} == 1)", "{{run}}: {{phase}}")],
        "short",
        6,
        4,
    ),
    (
        "stat",
        "Proposals",
        "Proposals rolled out as canaries in the time range (rounded: Prometheus extrapolates increase() to the "
        "range's edges).",
        [(f"round(sum(increase(dwcp_autotuner_proposals_total{{{SEL}}}[$__range])))", "proposals")],
        "short",
        4,
        4,
    ),
    (
        "stat",
        "Promotions",
        "Canaries promoted in the time range.",
        [(f"round(sum(increase(dwcp_autotuner_promotions_total{{{SEL}}}[$__range])))", "promotions")],
        "short",
        4,
        4,
    ),
    (
        "stat",
        "Rollbacks",
        "Canaries rolled back in the time range.",
        [(f"round(sum(increase(dwcp_autotuner_rollbacks_total{{{SEL}}}[$__range])))", "rollbacks")],
        "short",
        4,
        4,
    ),
    (
        "stat",
        "Internal errors",
        "Reconciles that raised (the run is Degraded, reason InternalError).",
        [(f"round(sum(increase(dwcp_autotuner_internal_errors_total{{{SEL}}}[$__range])))", "errors")],
        "short",
        3,
        4,
    ),
    (
        "stat",
        "Operator version",
        "The running operator's version.",
        [("max by (version) (dwcp_autotuner_build_info)", "{{version}}")],
        "short",
        3,
        4,
    ),
    (
        "timeseries",
        "Canary vs stable score",
        "Mean score (objective minus penalties) of each variant in the last analysis of the canary out.",
        [
            (
                f"max by (namespace, run, profile, variant) (dwcp_autotuner_analysis_score{{{SEL}}})",
                "{{run}} {{profile}} {{variant}}",
            )
        ],
        "short",
        12,
        8,
    ),
    (
        "timeseries",
        "Analysis p-value",
        "One-sided p-value that the canary is better, in the last analysis.",
        [(f"min by (namespace, run, profile) (dwcp_autotuner_analysis_p_value{{{SEL}}})", "{{run}} {{profile}}")],
        "short",
        12,
        8,
    ),
    (
        "timeseries",
        "Canary weight",
        "Share of the work (%) routed to the canary; 0 when none is out.",
        [(f"max by (namespace, run, profile) (dwcp_autotuner_canary_weight_percent{{{SEL}}})", "{{run}} {{profile}}")],
        "percent",
        12,
        8,
    ),
    (
        "timeseries",
        "Canaries started",
        "Canaries started, per profile.",
        [
            (
                f"sum by (namespace, run, profile) (increase(dwcp_autotuner_proposals_total{{{SEL}}}[$__rate_interval]))",
                "{{run}} {{profile}}",
            )
        ],
        "short",
        12,
        8,
    ),
    (
        "timeseries",
        "Promotions and rollbacks",
        "Per profile.",
        [
            (
                f"sum by (namespace, run, profile) (increase(dwcp_autotuner_promotions_total{{{SEL}}}[$__rate_interval]))",
                "promoted {{run}} {{profile}}",
            ),
            (
                f"sum by (namespace, run, profile) (increase(dwcp_autotuner_rollbacks_total{{{SEL}}}[$__rate_interval]))",
                "rolled back {{run}} {{profile}}",
            ),
        ],
        "short",
        12,
        8,
    ),
    (
        "timeseries",
        "Improvement",
        "Each profile's objective improvement from its promotions (compounded), in %.",
        [(f"max by (namespace, run, profile) (dwcp_autotuner_improvement_percent{{{SEL}}})", "{{run}} {{profile}}")],
        "percent",
        12,
        8,
    ),
    (
        "timeseries",
        "Reconcile latency p50 / p99",
        "Time of one reconcile of a run or a profile.",
        [
            (
                "histogram_quantile(0.5, sum by (le, kind) (rate(dwcp_autotuner_reconcile_seconds_bucket[$__rate_interval])))",
                "p50 {{kind}}",
            ),
            (
                "histogram_quantile(0.99, sum by (le, kind) (rate(dwcp_autotuner_reconcile_seconds_bucket[$__rate_interval])))",
                "p99 {{kind}}",
            ),
        ],
        "s",
        12,
        8,
    ),
    (
        "timeseries",
        "Tick lateness p50 / p99",
        "How late runs' ticks come, relative to --tick-seconds (0.2: a 5 s tick came after 6 s): the operator's load.",
        [
            (
                "histogram_quantile(0.5, sum by (le) (rate(dwcp_autotuner_tick_lateness_ratio_bucket[$__rate_interval])))",
                "p50",
            ),
            (
                "histogram_quantile(0.99, sum by (le) (rate(dwcp_autotuner_tick_lateness_ratio_bucket[$__rate_interval])))",
                "p99",
            ),
        ],
        "percentunit",
        12,
        8,
    ),
    (
        "timeseries",
        "Notifications",
        "Webhook notifications by format and outcome (sent; failed after its retries; dropped: the queue was full).",
        [
            (
                "sum by (format, outcome) (increase(dwcp_autotuner_notifications_total[$__rate_interval]))",
                "{{format}} {{outcome}}",
            )
        ],
        "short",
        12,
        8,
    ),
]

ANNOTATIONS = [
    (
        "Promotions",
        "green",
        f"sum by (namespace, run, profile) (changes(dwcp_autotuner_promotions_total{{{SEL}}}[2m])) > 0",
    ),
    (
        "Rollbacks",
        "red",
        f"sum by (namespace, run, profile) (changes(dwcp_autotuner_rollbacks_total{{{SEL}}}[2m])) > 0",
    ),
]


def _variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def dashboard() -> dict:
    panels, x, y, row_height = [], 0, 0, 0
    for number, (kind, title, description, targets, unit, width, height) in enumerate(PANELS, start=1):
        if x + width > 24:
            x, y, row_height = 0, y + row_height, 0
        panel = {
            "id": number,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"x": x, "y": y, "w": width, "h": height},
            "targets": [
                {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(65 + i), "range": True}
                for i, (expr, legend) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"]}} if kind == "stat" else {},
        }
        if kind == "timeseries" and unit == "percent" and title == "Canary weight":
            panel["fieldConfig"]["defaults"].update(
                {"min": 0, "max": 100, "custom": {"lineInterpolation": "stepAfter", "fillOpacity": 10}}
            )
        panels.append(panel)
        x, row_height = x + width, max(row_height, height)
    return {
        "uid": "dwcp-autotuner",
        "title": "dwcp-autotuner",
        "description": "Runs of the dwcp-autotuner operator: phase, canary vs stable, weights, promotions, rollbacks, "
        "improvement per profile, errors and reconcile latency.",
        "tags": ["dwcp", "autotuner", "operator"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 2,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                },
                _variable("namespace", "Namespace", 'label_values({__name__=~"dwcp_autotuner_.+"}, namespace)'),
                _variable("run", "Run", 'label_values({__name__=~"dwcp_autotuner_.+", namespace=~"$namespace"}, run)'),
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": name,
                    "datasource": DS,
                    "enable": True,
                    "iconColor": color,
                    "expr": expr,
                    "step": "30s",
                    "titleFormat": name[:-1],
                    "textFormat": "{{namespace}}/{{run}} {{profile}}",
                    "useValueForTime": False,
                }
                for name, color, expr in ANNOTATIONS
            ]
        },
        "panels": panels,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is not what this script writes")
    args = parser.parse_args()
    text = json.dumps(dashboard(), indent=1, ensure_ascii=False) + "\n"
    if args.check:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python scripts/gen_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Webhook notifications (ports/notify.py) against real HTTP receivers on loopback (http.server in a thread)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from dwcp_autotuner.ports.base import RecordingEvents
from dwcp_autotuner.ports.notify import Notification, Notifier, NotifyingEvents, Webhook, webhooks_from


class Receiver:
    """A real HTTP server that records POST bodies; answers with `codes` in turn (then 200), after `delay` s."""

    def __init__(self, codes=(), delay: float = 0.0) -> None:
        self.bodies: list[dict] = []
        self.attempts = 0
        self.codes = list(codes)
        self.delay = delay
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(receiver.delay)
                code = receiver.codes.pop(0) if receiver.codes else 200
                if code == 200:
                    receiver.bodies.append(json.loads(body))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@contextmanager
def receiver(**kw) -> Iterator[Receiver]:
    r = Receiver(**kw)
    try:
        yield r
    finally:
        r.close()


def wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def sample(reason="Promoted", kind="Normal") -> Notification:
    return Notification(
        "dwcp", "tune", kind, reason, "Promoted proposal 1 for hde: objective +12.00 %", "2026-12-04T10:00:00Z"
    )


def test_json_and_slack_formats_reach_their_receivers():
    with receiver() as plain, receiver() as slack:
        notifier = Notifier([Webhook(plain.url, "json"), Webhook(slack.url, "slack")], backoff_seconds=0.01)
        notifier.notify(sample())
        wait(lambda: plain.bodies and slack.bodies)
        notifier.close()
        body = plain.bodies[0]
        assert {k: body[k] for k in ("kind", "namespace", "name", "reason", "type")} == {
            "kind": "OptimizationRun",
            "namespace": "dwcp",
            "name": "tune",
            "reason": "Promoted",
            "type": "Normal",
        }
        assert body["message"].startswith("Promoted proposal 1") and body["operator"] == "dwcp-autotuner"
        assert slack.bodies == [
            {
                "text": ":white_check_mark: *Promoted* OptimizationRun `dwcp/tune`: "
                "Promoted proposal 1 for hde: objective +12.00 %"
            }
        ]


def test_a_failing_receiver_is_retried_with_backoff_and_the_outcome_counted():
    counts: list[tuple[str, str]] = []
    with receiver(codes=[500, 503]) as flaky, receiver(codes=[400]) as refusing:
        notifier = Notifier(
            [Webhook(flaky.url), Webhook(refusing.url)], backoff_seconds=0.01, count=lambda f, o: counts.append((f, o))
        )
        notifier.notify(sample())
        wait(lambda: len(counts) == 2)
        notifier.close()
    assert flaky.attempts == 3 and len(flaky.bodies) == 1  # two 5xx, then delivered
    assert refusing.attempts == 1  # a 4xx is the receiver refusing this message: not retried
    assert sorted(counts) == [("json", "failed"), ("json", "sent")]


def test_an_unreachable_receiver_gives_up_after_the_attempts():
    counts = []
    notifier = Notifier(
        [Webhook("http://127.0.0.1:9/nowhere")], attempts=3, backoff_seconds=0.01, count=lambda f, o: counts.append(o)
    )
    notifier.notify(sample())
    wait(lambda: counts)
    notifier.close()
    assert counts == ["failed"]


def test_notifying_never_blocks_the_reconcile_even_when_the_receiver_hangs():
    with receiver(delay=2.0) as slow:
        events = NotifyingEvents(RecordingEvents(), Notifier([Webhook(slow.url)], timeout_seconds=5), "dwcp", "tune")
        started = time.perf_counter()
        for i in range(20):
            events.emit("Normal", "Promoted", f"proposal {i}", key=f"{i}/Promoted")
        assert time.perf_counter() - started < 0.5  # 20 notifications queued while the receiver sleeps 2 s each
        events.notifier.close(timeout=0.1)


def test_only_outcomes_and_warnings_are_sent_and_a_retried_action_once():
    with receiver() as r:
        inner = RecordingEvents()
        events = NotifyingEvents(inner, Notifier([Webhook(r.url)], backoff_seconds=0.01), "dwcp", "tune")
        events.emit("Normal", "StepAdvanced", "canary at 25 %", key="1/step1")  # progress: not a message
        events.emit("Normal", "Promoted", "promoted", key="1/Promoted")
        events.emit("Normal", "Promoted", "promoted", key="1/Promoted")  # the same action retried
        events.emit("Warning", "ConfigMapDrift", "someone edited the canary")  # a Degraded cause
        events.emit("Normal", "AwaitingApproval", "waits for approval")
        wait(lambda: len(r.bodies) == 3)
        time.sleep(0.1)
        events.notifier.close()
    assert [b["reason"] for b in r.bodies] == ["Promoted", "ConfigMapDrift", "AwaitingApproval"]


def test_webhook_flags_parse_formats_and_secrets_from_the_environment():
    hooks = webhooks_from(
        ["https://hooks.example/a", "slack=env:SLACK_URL", "json=http://127.0.0.1:8000/x?y=1"],
        {"SLACK_URL": "https://hooks.slack.com/services/T/B/X"},
    )
    assert hooks == [
        Webhook("https://hooks.example/a", "json"),
        Webhook("https://hooks.slack.com/services/T/B/X", "slack"),
        Webhook("http://127.0.0.1:8000/x?y=1", "json"),
    ]
    with pytest.raises(ValueError, match="SLACK_URL is not set"):
        webhooks_from(["slack=env:SLACK_URL"], {})
    with pytest.raises(ValueError, match="expected"):
        webhooks_from(["slack=ftp://x"], {})


@pytest.mark.slow
def test_the_operator_posts_a_promotion_and_a_rollback_to_both_formats(monkeypatch):
    """The runtime over the API emulator (tests/support/faults.py): profile `a` is promoted, `b` rolled back."""
    from tests.support.faults import profile_spec, stable_json, world
    from tests.test_faults import history, run_spec

    with receiver() as plain, receiver() as slack:
        hooks = (Webhook(plain.url, "json"), Webhook(slack.url, "slack"))
        with world(monkeypatch, webhooks=hooks) as w:
            w.configmap("a-config", {"config.json": stable_json({"batch": 8, "timeout": 800})})
            w.configmap("b-config", {"config.json": stable_json({"workers": 4})})  # already at b's best
            w.profile("a", profile_spec("a", target="a-config", parameters=("batch",)))
            w.profile("b", profile_spec("b", target="b-config", parameters=("workers",)))
            w.run("tune", run_spec("a", "b", proposals=2))
            w.run_until(lambda: w.finished("tune"))
            assert history(w, "tune") == [("Promoted", "CanaryBetter"), ("RolledBack", "CanaryWorse")]
            wait(lambda: len(plain.bodies) >= 3 and len(slack.bodies) >= 3)
            w.runtime.notifier.close()
    reasons = [b["reason"] for b in plain.bodies]
    assert reasons[:2] == ["Promoted", "RolledBack"] and "Finished" in reasons
    assert "for a" in plain.bodies[0]["message"] and "for b" in plain.bodies[1]["message"]
    assert slack.bodies[0]["text"].startswith(":white_check_mark: *Promoted* OptimizationRun `faults/tune`")
    assert slack.bodies[1]["text"].startswith(":leftwards_arrow_with_hook: *RolledBack*")

"""Webhook notifications: what a platform team wants pushed to a chat or an incident tool.

A `Notifier` posts one JSON document per notable Event of a run (promotion, rollback, a canary held or waiting for
approval, an abort, every Degraded cause) to each configured webhook, in one of two formats:

- `json`: `{"kind", "namespace", "name", "reason", "type", "message", "time", "operator"}`, for any receiver;
- `slack`: Slack's incoming-webhook `{"text": …}` (Mattermost and Rocket.Chat take it too).

Delivery never blocks a reconcile: `notify` puts the message on a bounded queue and returns; one background thread
posts it, retrying a failed post (a connection error, a timeout, a 5xx or 429 answer) with exponential backoff up to
`attempts` times. A full queue drops the newest message and counts it: a chat that is down must not grow the
operator's memory. `dwcp_autotuner_notifications_total{format, outcome}` counts sent, failed and dropped messages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

log = logging.getLogger(__name__)

Format = Literal["json", "slack"]
FORMATS: tuple[str, ...] = ("json", "slack")

#: The Event reasons that are worth a message (Normal ones that mark an outcome, and every Warning).
NOTIFY_REASONS = frozenset(
    {"Promoted", "RolledBack", "CanaryHeld", "AwaitingApproval", "Aborted", "Finished", "Reoptimizing"}
)
_ICONS = {
    "Promoted": ":white_check_mark:",
    "RolledBack": ":leftwards_arrow_with_hook:",
    "AwaitingApproval": ":raising_hand:",
}


@dataclasses.dataclass(frozen=True)
class Webhook:
    url: str
    format: Format = "json"

    @classmethod
    def parse(cls, text: str) -> Webhook:
        """`FORMAT=URL` (or a bare URL: json). Raises ValueError naming what is wrong."""
        fmt, sep, url = text.partition("=")
        if not sep or fmt not in FORMATS:
            fmt, url = "json", text
        if not url.startswith(("http://", "https://")) or len(url.split("//", 1)[1]) == 0:
            raise ValueError(f"expected [json=|slack=]http(s)://host/path, got {text!r}")
        return cls(url, fmt)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class Notification:
    namespace: str
    name: str
    type: str  # Normal | Warning
    reason: str
    message: str
    time: str
    kind: str = "OptimizationRun"

    def body(self, fmt: Format, operator: str) -> bytes:
        if fmt == "slack":
            icon = _ICONS.get(self.reason, ":warning:" if self.type == "Warning" else ":information_source:")
            text = f"{icon} *{self.reason}* {self.kind} `{self.namespace}/{self.name}`: {self.message}"
            return json.dumps({"text": text}).encode()
        document = {**dataclasses.asdict(self), "operator": operator}
        return json.dumps(document).encode()


def worth_notifying(kind: str, reason: str) -> bool:
    return kind == "Warning" or reason in NOTIFY_REASONS


class Notifier:
    def __init__(
        self,
        webhooks: Iterable[Webhook],
        *,
        operator: str = "dwcp-autotuner",
        attempts: int = 5,
        backoff_seconds: float = 1.0,
        timeout_seconds: float = 5.0,
        queue_size: int = 1000,
        count: Callable[[str, str], None] | None = None,
    ) -> None:
        self.webhooks = list(webhooks)
        self.operator = operator
        self.attempts, self.backoff, self.timeout = attempts, backoff_seconds, timeout_seconds
        self.count = count or (lambda fmt, outcome: None)
        self._queue: queue.Queue[tuple[Webhook, bytes] | None] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def notify(self, notification: Notification) -> None:
        """Queue the notification for every webhook; returns at once."""
        if not self.webhooks:
            return
        self._start()
        for hook in self.webhooks:
            try:
                self._queue.put_nowait((hook, notification.body(hook.format, self.operator)))
            except queue.Full:
                self.count(hook.format, "dropped")
                log.warning(
                    "notification queue full: dropped %s for %s/%s",
                    notification.reason,
                    notification.namespace,
                    notification.name,
                )

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to `timeout` seconds), then stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._deliver_all, name="notifier", daemon=True)
                self._thread.start()

    def _deliver_all(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            hook, body = item
            self.count(hook.format, "sent" if self._deliver(hook, body) else "failed")

    def _deliver(self, hook: Webhook, body: bytes) -> bool:
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(
                hook.url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    if 200 <= response.status < 300:
                        return True
                    problem = f"HTTP {response.status}"
            except urllib.error.HTTPError as error:
                problem = f"HTTP {error.code}"
                if error.code < 500 and error.code != 429:  # the receiver refuses this message: no point retrying
                    log.warning("webhook %s refused a notification (%s)", _safe(hook.url), problem)
                    return False
            except (OSError, ValueError) as error:  # connection refused, timeout, DNS
                problem = str(error)
            if attempt < self.attempts and not self._stop.wait(delay):
                delay *= 2
                continue
            if attempt < self.attempts:  # stopping: one last try was made
                break
        log.warning("webhook %s: giving up after %d attempt(s) (%s)", _safe(hook.url), attempt, problem)
        return False


def _safe(url: str) -> str:
    """A webhook URL for a log line: scheme and host only (Slack's path is a secret)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/…"


class NotifyingEvents:
    """An EventSink that also notifies the webhooks of the Events worth a message (once per keyed action)."""

    def __init__(self, inner, notifier: Notifier, namespace: str, name: str) -> None:
        self.inner, self.notifier, self.namespace, self.name = inner, notifier, namespace, name

    def emit(self, kind, reason, message, key=None) -> bool:
        new = self.inner.emit(kind, reason, message, key=key)
        if new and worth_notifying(kind, reason):
            now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.notifier.notify(Notification(self.namespace, self.name, kind, reason, message, now))
        return new

    def reported(self, key: str) -> bool:
        return self.inner.reported(key)


def webhooks_from(values: Iterable[str], environ: Mapping[str, str]) -> list[Webhook]:
    """Webhooks from `--webhook` flags; `FORMAT=env:VAR` reads the URL from an environment variable (a Secret)."""
    hooks = []
    for value in values:
        fmt, sep, rest = value.partition("=")
        if sep and fmt in FORMATS and rest.startswith("env:"):
            variable = rest[4:]
            url = environ.get(variable)
            if not url:
                raise ValueError(f"{value!r}: the environment variable {variable} is not set")
            value = f"{fmt}={url}"
        hooks.append(Webhook.parse(value))
    return hooks

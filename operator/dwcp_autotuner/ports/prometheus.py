"""MetricsSource over a Prometheus server's HTTP API (via prometheus-api-client).

Behaviour worth knowing:

- `samples()` runs a range query (`/api/v1/query_range`). When the query yields several series
  (e.g. a template without an aggregation that matches several pods), their values are SUMMED per
  timestamp — write the template with an explicit aggregation (`sum(...)`, `avg(...)`) when a sum
  is not what you mean. NaN and ±Inf values are dropped (a `rate()` ratio over an idle window is
  NaN; it is absent data, not a measurement).
- prometheus-api-client rounds `start`/`end` to whole seconds (the server then aligns the
  evaluation timestamps to `start + k*step`).
- Errors: connection failures, timeouts and HTTP 5xx raise `Unavailable`; a query that Prometheus
  rejects (HTTP 400 `bad_data`, 422 `execution`) raises `QueryRejected`, a subclass of `Unavailable`
  carrying Prometheus's own message, so callers that only know the port protocol still catch it.
- The client's default urllib3 `Retry` (3 tries, exponential backoff, retrying 5xx) would turn an
  outage into ~7 s of blocking followed by a `requests.RetryError`; this adapter installs a short
  retry policy instead (one immediate reconnect, no retry on HTTP status).
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import logging
import math
import re
import time
from collections.abc import Iterable
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from .base import Sample, Unavailable

_LOGGER = logging.getLogger(__name__)

# prometheus-api-client formats every non-200 answer as: "HTTP Status Code 400 (b'{...json...}')"
_CLIENT_ERROR = re.compile(r"^HTTP Status Code (\d+) \((.*)\)$", re.DOTALL)
_MAX_MESSAGE = 300


class QueryRejected(Unavailable):
    """Prometheus answered, but refused the query (HTTP 400/422); `message` is its error text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Prometheus rejected the query (HTTP {status}): {message}")
        self.status = status
        self.message = message


def _short(text: str, limit: int = _MAX_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parse_client_error(exc: PrometheusApiClientException) -> tuple[int | None, str]:
    """(HTTP status, Prometheus's `error` text) out of the client's stringified exception."""
    text = str(exc)
    match = _CLIENT_ERROR.match(text)
    if not match:
        return None, _short(text)
    status = int(match.group(1))
    raw: Any = match.group(2)
    try:
        raw = ast.literal_eval(raw)  # the repr of the response's bytes
    except (ValueError, SyntaxError):
        pass
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(raw)
    except (TypeError, ValueError):
        return status, _short(str(raw))
    if isinstance(body, dict) and body.get("error"):
        return status, _short(str(body["error"]))
    return status, _short(str(raw))


class PrometheusMetrics:
    """`MetricsSource` backed by a Prometheus server at `url` (e.g. `http://prometheus:9090`)."""

    def __init__(
        self,
        url: str,
        timeout_seconds: float = 5,
        *,
        headers: dict[str, str] | None = None,
        validation_seconds: float = 0.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        # `validate` answers a query it checked less than this long ago from memory: a profile edit that leaves
        # its queries alone (a description, a bound) is re-validated without a round trip to Prometheus per query.
        self.validation_seconds = validation_seconds
        self._validated: dict[str, tuple[float, str | None]] = {}
        retry = Retry(
            total=1,
            connect=1,
            read=False,  # re-raise read timeouts as such (read=0 would wrap them in MaxRetryError)
            status=0,
            backoff_factor=0,
            status_forcelist=(),
            raise_on_status=False,
            allowed_methods=frozenset({"GET", "POST"}),
        )
        self._client = PrometheusConnect(
            url=self.url, disable_ssl=False, retry=retry, timeout=timeout_seconds, headers=headers
        )
        # Ask Prometheus to give up no later than we do (server-side query timeout).
        self._params = {"timeout": f"{max(1, int(math.ceil(timeout_seconds)))}s"}

    def close(self) -> None:
        self._client._session.close()

    # -- MetricsSource --------------------------------------------------------------------------

    def samples(self, query: str, start: dt.datetime, end: dt.datetime, step_seconds: float) -> list[Sample]:
        if step_seconds <= 0:
            raise ValueError(f"step_seconds must be positive, got {step_seconds}")
        if end < start:
            raise ValueError("end must not be before start")
        result = self._range(query, start, end, step_seconds)
        return _sum_series(result)

    def validate(self, query: str) -> str | None:
        """Run the query once as a (one-point) range query — the way `samples()` will run it.

        A range query is stricter than an instant one: it also rejects expressions that are not
        instant vectors or scalars (e.g. a bare `x[5m]`), which `samples()` could never evaluate.
        Returns Prometheus's error text for a rejected query (400 bad_data: parse errors, bad types;
        422 execution: e.g. many-to-many matching on the current data), None when accepted; raises
        `Unavailable` when Prometheus cannot be asked.
        """
        if self.validation_seconds > 0:
            hit = self._validated.get(query)
            if hit is not None and time.monotonic() - hit[0] < self.validation_seconds:
                return hit[1]
        now = dt.datetime.now(dt.UTC)
        try:
            self._range(query, now, now, 1.0)
            problem = None
        except QueryRejected as exc:
            problem = exc.message
        if self.validation_seconds > 0:  # an unreachable Prometheus raised above: that is never remembered
            if len(self._validated) > 10_000:
                self._validated.clear()
            self._validated[query] = (time.monotonic(), problem)
        return problem

    # -- internals ------------------------------------------------------------------------------

    def _range(self, query: str, start: dt.datetime, end: dt.datetime, step_seconds: float) -> list[dict[str, Any]]:
        try:
            result = self._client.custom_query_range(
                query,
                start_time=start,
                end_time=end,
                step=_format_step(step_seconds),
                params=self._params,
            )
        except PrometheusApiClientException as exc:
            status, message = _parse_client_error(exc)
            if status in (400, 422):
                raise QueryRejected(status, message) from None
            raise Unavailable(f"Prometheus at {self.url} answered HTTP {status}: {message}") from None
        except requests.Timeout:
            raise Unavailable(f"Prometheus at {self.url} did not answer within {self.timeout_seconds:g}s") from None
        except requests.ConnectionError as exc:
            if "timed out" in _root_cause(exc).lower():
                raise Unavailable(f"Prometheus at {self.url} did not answer within {self.timeout_seconds:g}s") from None
            raise Unavailable(f"cannot connect to Prometheus at {self.url}: {_root_cause(exc)}") from None
        except requests.RequestException as exc:
            raise Unavailable(f"request to Prometheus at {self.url} failed: {_root_cause(exc)}") from None
        except (ValueError, KeyError, TypeError) as exc:  # 200 with a body that is not the API's JSON
            raise Unavailable(f"unexpected answer from Prometheus at {self.url}: {_short(repr(exc))}") from None
        if not isinstance(result, list):
            raise Unavailable(f"unexpected answer from Prometheus at {self.url}: result is {type(result).__name__}")
        return result


def _format_step(step_seconds: float) -> str:
    # Prometheus accepts a float number of seconds; avoid exponent notation.
    text = f"{step_seconds:.3f}".rstrip("0").rstrip(".")
    return text or "0.001"


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error chain, briefly (e.g. 'Connection refused')."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        reason = getattr(current, "reason", None)
        nxt = reason if isinstance(reason, BaseException) else None
        if nxt is None and current.args and isinstance(current.args[0], BaseException):
            nxt = current.args[0]
        current = nxt or current.__cause__ or current.__context__
    innermost = seen[-1]
    text = str(innermost)
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return _short(m.group(1) if m else text, 160)


def _sum_series(result: Iterable[dict[str, Any]]) -> list[Sample]:
    totals: dict[float, float] = {}
    for series in result:
        points = series.get("values")
        if points is None and "value" in series:  # instant-vector shape, tolerated
            points = [series["value"]]
        for timestamp, raw in points or ():
            try:
                value = float(raw)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                continue
            ts = float(timestamp)
            totals[ts] = totals.get(ts, 0.0) + value
    return [Sample(timestamp=ts, value=totals[ts]) for ts in sorted(totals)]

"""Reusable test fixtures: a controllable metrics exporter and a real Prometheus server.

    exporter = VariantExporter(seed=1)
    exporter.set("dwcp_test_objective", variant="canary", mean=110, noise_cv=0.02)      # a gauge
    exporter.set_rate("dwcp_test_jobs_total", variant="stable", per_second=20)         # a counter
    with running_prometheus([exporter.target], scrape_interval="1s") as prom:
        prom.wait_for('dwcp_test_objective{variant="canary"}', min_samples=3)  # a series selector
        ... PrometheusMetrics(prom.url) ...
        prom.stop(); ...; prom.start()     # an outage and a recovery (same port, same TSDB)
        prom.freeze(); ...; prom.thaw()    # a hung server (SIGSTOP/SIGCONT): requests time out
    exporter.stop()

Gauges are drawn afresh at every scrape as `mean * (1 + noise_cv * N(0, 1))` from a seeded RNG
(the sequence is reproducible for a given scrape order, but scrape timing is not, so tests must
assert statistically, not exactly). Counters grow by `per_second * elapsed * (1 + noise_cv * N(0,1))`
(clamped at 0: counters never decrease) between scrapes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PROMETHEUS_BINARY = os.environ.get("DWCP_TEST_PROMETHEUS", "/usr/bin/prometheus")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, for a server another process binds later (`free_port_block`)."""
    return free_port_block(1, host) + 1


#: Ports this process handed out already: two servers of one test never get the same port.
_HANDED_OUT: set[int] = set()


def free_port_block(size: int, host: str = "127.0.0.1", tries: int = 50) -> int:
    """A base port whose `size` ports base+1 .. base+size are all free now (a base from one free port alone
    once gave a block whose +8 another process held: the operator's health port, and a 3-minute wait).

    The block lies below the ports the kernel hands out as the source of outgoing connections: one drawn from
    that range was taken between this check and the script's bind by a connection's source port (the script's
    own processes talk to its emulator, other tests to theirs)."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(tries):
        if low - size - 1 > 10000:
            base = rng.randrange(10000, low - size - 1)
        else:  # an unusual range that leaves no room below it: next to any free port
            base = _any_free_port(host)
        block = range(base + 1, base + size + 1)
        if base + size > 65535 or _HANDED_OUT.intersection(block):
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in block:
                    sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind((host, port))
        except OSError:
            continue
        _HANDED_OUT.update(block)
        return base
    raise RuntimeError(f"no block of {size} free ports on {host} in {tries} tries")


def _any_free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """The lowest source port of outgoing connections (Linux: net.ipv4.ip_local_port_range; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# ----------------------------------------------------------------------------------------------
# The exporter
# ----------------------------------------------------------------------------------------------


@dataclass
class _Series:
    kind: str  # "gauge" | "counter"
    labels: dict[str, str]
    mean: float = 0.0  # gauges: the mean value; counters: the mean rate per second
    noise_cv: float = 0.0
    total: float = 0.0  # counters: the running total
    last: float | None = None  # counters: monotonic time of the last scrape


@dataclass
class _Family:
    kind: str
    documentation: str
    label_names: tuple[str, ...]
    series: dict[tuple[str, ...], _Series] = field(default_factory=dict)


class _VariantCollector(Collector):
    def __init__(self, owner: VariantExporter) -> None:
        self._owner = owner

    def collect(self) -> Iterable[Any]:
        return self._owner._collect()


class VariantExporter:
    """A `/metrics` endpoint on a free loopback port whose per-variant series the test controls."""

    def __init__(self, *, seed: int = 0, host: str = "127.0.0.1", port: int = 0) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self.scrapes = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_VariantCollector(self))
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.host = host
        self.port = int(self._server.server_port)

    @property
    def target(self) -> str:
        """`host:port`, for a Prometheus scrape config."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    # -- control -------------------------------------------------------------------------------

    def set(
        self,
        name: str,
        *,
        variant: str,
        mean: float,
        noise_cv: float = 0.0,
        labels: Mapping[str, str] | None = None,
        documentation: str = "",
    ) -> None:
        """Expose the gauge `name{variant=..., **labels}` around `mean` (relative noise `noise_cv`)."""
        with self._lock:
            series = self._series(name, "gauge", variant, labels, documentation)
            series.mean, series.noise_cv = float(mean), float(noise_cv)

    def set_rate(
        self,
        name: str,
        *,
        variant: str,
        per_second: float,
        noise_cv: float = 0.0,
        labels: Mapping[str, str] | None = None,
        documentation: str = "",
    ) -> None:
        """Expose the counter `name{variant=...}` growing at `per_second` (name should end in _total)."""
        with self._lock:
            series = self._series(name, "counter", variant, labels, documentation)
            if series.last is None:
                series.last = time.monotonic()
            series.mean, series.noise_cv = float(per_second), float(noise_cv)

    def remove(self, name: str, *, variant: str | None = None) -> None:
        """Stop exposing one variant's series of `name` (or all of them): Prometheus marks it stale."""
        with self._lock:
            family = self._families.get(name)
            if family is None:
                return
            if variant is None:
                del self._families[name]
                return
            for key in [k for k, s in family.series.items() if s.labels.get("variant") == variant]:
                del family.series[key]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> VariantExporter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------

    def _series(
        self, name: str, kind: str, variant: str, labels: Mapping[str, str] | None, documentation: str
    ) -> _Series:
        all_labels = {"variant": variant, **dict(labels or {})}
        label_names = tuple(sorted(all_labels))
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _Family(kind, documentation or f"{name} (test exporter)", label_names)
        if family.kind != kind:
            raise ValueError(f"{name} is a {family.kind}, not a {kind}")
        if family.label_names != label_names:
            raise ValueError(f"{name} has labels {family.label_names}, not {label_names}")
        key = tuple(all_labels[n] for n in label_names)
        series = family.series.get(key)
        if series is None:
            series = family.series[key] = _Series(kind, all_labels)
        return series

    def _noisy(self, mean: float, noise_cv: float) -> float:
        return mean * (1.0 + noise_cv * self._rng.gauss(0.0, 1.0)) if noise_cv else mean

    def _collect(self) -> list[Any]:
        out: list[Any] = []
        now = time.monotonic()
        with self._lock:
            self.scrapes += 1
            for name, family in sorted(self._families.items()):
                if family.kind == "gauge":
                    metric: Any = GaugeMetricFamily(name, family.documentation, labels=list(family.label_names))
                else:
                    metric = CounterMetricFamily(name, family.documentation, labels=list(family.label_names))
                for key, series in sorted(family.series.items()):
                    if series.kind == "gauge":
                        metric.add_metric(list(key), self._noisy(series.mean, series.noise_cv))
                    else:
                        elapsed = now - (series.last if series.last is not None else now)
                        series.total += max(0.0, self._noisy(series.mean, series.noise_cv) * elapsed)
                        series.last = now
                        metric.add_metric(list(key), series.total)
                out.append(metric)
        return out


# ----------------------------------------------------------------------------------------------
# Prometheus
# ----------------------------------------------------------------------------------------------


class PrometheusServer:
    """A real `prometheus` process on a loopback port; see `running_prometheus`."""

    def __init__(
        self,
        scrape_targets: Iterable[str],
        *,
        scrape_interval: str = "1s",
        workdir: Path,
        binary: str = PROMETHEUS_BINARY,
        port: int | None = None,
    ) -> None:
        self.binary = binary
        self.scrape_interval = scrape_interval
        self.workdir = workdir
        self.config_path = workdir / "prometheus.yml"
        self.data_dir = workdir / "data"
        self.log_path = workdir / "prometheus.log"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._write_config(list(scrape_targets))

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start (or restart after `stop()`) on the same port and data directory; wait until ready."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._process.returncode}:\n{self.log_tail()}")
            if self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus was not ready within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL): the port refuses connections until `start()`."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # in case it is frozen
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (requests time out)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- configuration -------------------------------------------------------------------------

    def set_targets(self, scrape_targets: Iterable[str]) -> None:
        """Rewrite the scrape targets and hot-reload the configuration (`POST /-/reload`)."""
        self._write_config(list(scrape_targets))
        if self.running:
            request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()

    def _write_config(self, targets: list[str]) -> None:
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "dwcp-test",
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
        self.config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML

    # -- helpers for tests ---------------------------------------------------------------------

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query (the raw `data.result`), with the standard library only."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())["data"]["result"]

    def wait_for(self, selector: str, *, min_samples: int = 1, timeout: float = 30.0) -> None:
        """Wait until some series of the series `selector` (e.g. `x{variant="canary"}`) holds `min_samples`
        scraped samples. NB: Prometheus scrapes the first time up to ~5 s after it starts (its scrape
        manager applies new target sets on a 5 s tick)."""
        promql = f"max(count_over_time({selector}[1h]))"
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                result = self.query(promql)
                last = result
                if result and float(result[0]["value"][1]) >= min_samples:
                    return
            except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(
            f"{selector!r}: fewer than {min_samples} samples after {timeout}s (last: {last!r})\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False


def prometheus_available() -> bool:
    return shutil.which(PROMETHEUS_BINARY) is not None or os.access(PROMETHEUS_BINARY, os.X_OK)


@contextlib.contextmanager
def running_prometheus(scrape_targets: list[str], scrape_interval: str = "1s") -> Iterator[PrometheusServer]:
    """A real Prometheus scraping `scrape_targets` (`host:port`), killed at exit.

    Skips the calling test (pytest.skip) when the binary is missing; set DWCP_TEST_PROMETHEUS to use
    another one.
    """
    if not prometheus_available():
        import pytest

        pytest.skip(
            f"the Prometheus binary {PROMETHEUS_BINARY} is not installed (apt-get install prometheus, "
            f"or set DWCP_TEST_PROMETHEUS)"
        )
    with tempfile.TemporaryDirectory(prefix="dwcp-prometheus-") as tmp:
        server = PrometheusServer(scrape_targets, scrape_interval=scrape_interval, workdir=Path(tmp))
        try:
            server.start()
            yield server
        finally:
            server.stop()

"""The service's Prometheus metrics (`/metrics`), one registry per Runtime.

prometheus_client's global registry would make two services in one process (the tests run
several) count into the same series; each Runtime owns a `CollectorRegistry` instead.

Hooks, called where each thing is known (names are the metric families below):
- `request` — api/observe.py, when an answer has been sent (or the client left);
- `attempt`, `failover`, `hedge` — pool/failover.py, through its `RunObserver` seam;
- `first_content`, `tokens` — a front door, when its first answer text is ready and when an
  answer is complete. Both default their route and client key to the request being answered
  (requestctx.py), so any door calls them without arguments of its own.
The cookie states and the per-key counters are read from the pool and `KeyUsage` at scrape time
(`_ScrapeTimeCollector`), so they never drift from what `/v1/pool` and the admin view show.

Label values are bounded: routes are the app's route rules, models the catalogue's ids (anything
else is `other`), outcomes the failure kinds of upstream/classify.py, keys the configured names.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from .client_keys import KeyUsage
from .pool.cookies import CookiePool, CookieState
from .requestctx import UNMATCHED_ROUTE, current_request

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4   # the text format every Prometheus version scrapes
PREFIX = "genspark2api"
OTHER_MODEL = "other"
SUCCESS = "success"
CANCELLED = "cancelled"   # a lost race or a client that left: the attempt had no outcome

# Seconds. First content: Genspark usually starts within 1-5 s, a hedge fires at 10 s by default.
FIRST_CONTENT_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)
# Whole answers: from a 404 in a millisecond to a video of several minutes.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0)


class Metrics:
    def __init__(self, pool: CookiePool, key_usage: KeyUsage, known_models: frozenset[str]) -> None:
        self.registry = CollectorRegistry()
        self.key_usage = key_usage
        self.known_models = known_models
        r = self.registry
        self._requests = Counter(f"{PREFIX}_requests", "HTTP requests answered, by route, status and requested model",
                                 ("route", "status", "model"), registry=r)
        self._duration = Histogram(f"{PREFIX}_request_duration_seconds",
                                   "Time from a request's arrival to the end of its answer (streams included)",
                                   ("route",), buckets=DURATION_BUCKETS, registry=r)
        self._first_content = Histogram(f"{PREFIX}_first_content_seconds",
                                        "Time from a request's arrival to its first answer text (streamed answers)",
                                        ("route",), buckets=FIRST_CONTENT_BUCKETS, registry=r)
        self._attempts = Counter(f"{PREFIX}_upstream_attempts",
                                 "Upstream attempts by outcome: success, cancelled or a failure kind (classify.py)",
                                 ("outcome",), registry=r)
        self._failovers = Counter(f"{PREFIX}_failovers", "Requests moved to another cookie after a failed attempt",
                                  registry=r)
        self._hedges = Counter(f"{PREFIX}_hedges", "Second attempts started because the first stayed silent "
                               "(HEDGE_AFTER_SECONDS)", registry=r)
        self._postponed = Counter(f"{PREFIX}_silence_checks_postponed", "Due hedges and stall checks that waited "
                                  "because the service's own event loop ran late (a burst of requests), by check",
                                  ("check",), registry=r)
        self._tokens = Counter(f"{PREFIX}_tokens", "Tokens of completed answers, by type (prompt or completion)",
                               ("type",), registry=r)
        r.register(_ScrapeTimeCollector(pool, key_usage))

    # ------------------------------------------------------------------ hooks

    def model_label(self, model: str) -> str:
        return model if model in self.known_models else OTHER_MODEL

    def request(self, route: str, status: int, model: str, seconds: float, *, key: str | None = None) -> None:
        self._requests.labels(route, str(status), self.model_label(model) if model else "").inc()
        self._duration.labels(route).observe(max(0.0, seconds))
        self.key_usage.request(key)

    def attempt(self, outcome: str) -> None:
        self._attempts.labels(outcome).inc()

    def failover(self) -> None:
        self._failovers.inc()

    def hedge(self) -> None:
        self._hedges.inc()

    def postponed(self, check: str) -> None:
        self._postponed.labels(check).inc()

    def first_content(self, route: str | None = None, seconds: float | None = None) -> None:
        """The first answer text of a request is ready; defaults: the current request's route and age."""
        ctx = current_request()
        if route is None:
            route = ctx.route if ctx is not None else UNMATCHED_ROUTE
        if seconds is None:
            if ctx is None:
                return
            seconds = ctx.elapsed()
        self._first_content.labels(route).observe(max(0.0, seconds))

    def tokens(self, prompt: int, completion: int, *, key: str | None = None) -> None:
        """A completed answer's usage; counted for the current request's client key too."""
        self._tokens.labels("prompt").inc(max(0, prompt))
        self._tokens.labels("completion").inc(max(0, completion))
        if key is None:
            ctx = current_request()
            key = ctx.key_name if ctx is not None else None
        self.key_usage.tokens(key, prompt, completion)

    # ------------------------------------------------------------------ exposition

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ScrapeTimeCollector:
    """Cookies by state and per-key counters, read from their owners at each scrape."""

    def __init__(self, pool: CookiePool, key_usage: KeyUsage) -> None:
        self.pool = pool
        self.key_usage = key_usage

    def describe(self) -> list[Metric]:
        return []  # nothing to check for clashes at registration: the names are this module's own

    def collect(self) -> Iterator[Metric]:
        snapshot = self.pool.snapshot()
        states = GaugeMetricFamily(f"{PREFIX}_cookies", "Cookies of the pool by state", labels=("state",))
        for state in CookieState:
            states.add_metric((state.value,), sum(1 for s in snapshot if s.state is state))
        yield states
        yield GaugeMetricFamily(f"{PREFIX}_cookies_in_flight", "Upstream requests in flight over all cookies",
                                value=sum(s.in_flight for s in snapshot))
        rows = self.key_usage.snapshot()
        requests = CounterMetricFamily(f"{PREFIX}_client_key_requests", "Requests per client key name "
                                       "(API_SECRET)", labels=("key",))
        limited = CounterMetricFamily(f"{PREFIX}_client_key_rate_limited", "Requests per client key name "
                                      "refused by API_KEY_RPM", labels=("key",))
        tokens = CounterMetricFamily(f"{PREFIX}_client_key_tokens", "Tokens per client key name, by type",
                                     labels=("key", "type"))
        for row in rows:
            requests.add_metric((row.name,), row.requests)
            limited.add_metric((row.name,), row.rate_limited)
            tokens.add_metric((row.name, "prompt"), row.prompt_tokens)
            tokens.add_metric((row.name, "completion"), row.completion_tokens)
        yield requests
        yield limited
        yield tokens

"""The connection manager (issue 14 item 7): a pooled HTTP client per dependency, behind that dependency's host-wide
circuit breaker and rate limit, health-checked, so that an agent gets all of the resilience services in one line:

    def mount(self, state):
        self.http("payments", "http://127.0.0.1:8081", limit="payments", health="/health")
    def handle_call(self, msg, state):
        return self.http("payments").post("/charge", json=msg).json(), state

    request ──limit? acquire a token (leased ones first)──> health due? GET health through the breaker
            ──> guarded(breaker) ──> httpx pool (keep-alive, at most max_connections) ──> response
                                        │ 5xx, 429: HttpError (http_error / unavailable): a failure, retried
                                        │ timeout: timeout · no connection: unreachable
                                        └ 2xx-4xx: the response (a 4xx is the dependency's answer: not a failure)

The pool is httpx's (``httpx.Client``): connections are kept and reused across messages; the agent is single-threaded,
so one synchronous client per dependency is all it needs. Errors carry the one error shape (ipc/errors.py) with
``context.dependency``, ``status`` and ``url``; the breaker counts what ``classify`` says is a failure.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx

from ipc.errors import ErrorCode, FoundationError

if TYPE_CHECKING:
    from agents.resilience import ResilienceClient
    from ipc.workflow_def import RetryPolicy


class HttpError(FoundationError):
    """A 5xx or 429 answer: the dependency failed (or shed load); ``response`` is what it said."""

    def __init__(self, dependency: str, response: httpx.Response) -> None:
        status = response.status_code
        super().__init__(ErrorCode.HTTP_ERROR, f"{dependency}: {response.request.method} {response.request.url} "
                         f"answered {status} {response.reason_phrase}",
                         category="unavailable" if status in (429, 503) else "infrastructure",
                         context={"dependency": dependency, "status": status, "url": str(response.request.url),
                                  "body": response.text[:200]})
        self.response = response


class HttpDependency:
    """One dependency's pooled client. Made by ``Agent.http(name, base_url, ...)``; the same object after that."""

    def __init__(self, resilience: ResilienceClient, name: str, base_url: str, *, limit: str | None = None,
                 breaker: str | None = None, timeout: float = 5.0, max_connections: int = 10,
                 health: str | None = None, health_every: float = 10.0, wait: float = 10.0,
                 retry: RetryPolicy | None = None, headers: dict[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.name, self.base_url = name, base_url
        self.breaker = breaker or name
        self.limit, self.wait, self.policy = limit, wait, retry
        self.health, self.health_every = health, health_every
        self.healthy_at = -float("inf")  # when the last health check passed (monotonic)
        self._resilience = resilience
        self.pool = httpx.Client(base_url=base_url, timeout=timeout, headers=headers, transport=transport,
                                 limits=httpx.Limits(max_connections=max_connections,
                                                     max_keepalive_connections=max_connections))

    # ---- requests ----

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request: a token of ``limit`` (if any), a health check if one is due, then the call through the
        breaker (retried by ``retry``, the policy given at construction, if any: within the retry budget)."""
        if self.limit is not None:
            self._resilience.refuse_if_open(self.breaker)  # no token spent on a call that would not be made
            self._resilience.acquire(self.limit, 1, self.wait)
        if self.health is not None and time.monotonic() - self.healthy_at > self.health_every:
            self.check()
        if self.policy is not None:
            return self._resilience.retry(self.breaker, self._send, method, url, kwargs, policy=self.policy)
        return self._resilience.guarded(self.breaker, self._send, method, url, kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    # ---- health ----

    def check(self) -> None:
        """GET the health path through the breaker (a failed check counts against it, and raises); at most every
        ``health_every`` seconds before a request, or when called (e.g. from a timer, to ``register`` or not)."""
        if self.health is None:
            return
        self._resilience.guarded(self.breaker, self._send, "GET", self.health, {}, True)
        self.healthy_at = time.monotonic()

    def healthy(self) -> bool:
        """Whether a health check passes now (False too while the breaker refuses calls)."""
        try:
            self.check()
        except FoundationError:  # the breaker refused, or the check failed (mapped at _send)
            return False
        return True

    def close(self) -> None:
        self.pool.close()

    def _send(self, method: str, url: str, kwargs: dict[str, Any], health: bool = False) -> httpx.Response:
        try:
            response = self.pool.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise FoundationError(ErrorCode.TIMEOUT, f"{self.name}: {method} {url}: no answer in time ({exc!r})",
                                  context={"dependency": self.name, "url": url}) from exc
        except httpx.TransportError as exc:
            raise FoundationError(ErrorCode.UNREACHABLE, f"{self.name}: {method} {url}: {exc!r}",
                                  context={"dependency": self.name, "url": url}) from exc
        if response.status_code >= 500 or response.status_code == 429 or (health and response.status_code >= 400):
            raise HttpError(self.name, response)
        return response

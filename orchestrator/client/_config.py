"""Value objects both clients take (retries, TLS) and the retry loop built from them."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.client.errors import DeadlineExceeded, ServingUnavailable

if TYPE_CHECKING:
    import tenacity

log = logging.getLogger("orchestrator.client")
T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0  # TF Serving's own --rest_api_timeout_in_ms default
# TF Serving accepts messages up to INT32_MAX; gRPC clients default to 4 MiB and fail on images.
MAX_MESSAGE_BYTES = 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Retries of transient failures only: UNAVAILABLE, HTTP 502/503, connection refused.

    `attempts` counts the first try; retries stop earlier when the call's deadline would pass
    during the next backoff. Backoff is exponential with jitter, capped at `max_backoff_s`.
    """

    attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    jitter_s: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts counts the first try: it must be >= 1")


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True, kw_only=True)
class Tls:
    """TLS for gRPC and HTTPS. Without `ca_file` the system's roots verify the server.

    `cert_file` + `key_file` present a client certificate (TF Serving's `client_verify`).
    `server_name` checks the server certificate against another name than the address's host
    (gRPC only), e.g. when connecting by IP to a certificate issued for a DNS name.
    """

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("Tls: cert_file and key_file go together (mutual TLS)")

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root CA, client key, client cert chain) as bytes, for grpc.ssl_channel_credentials."""

        def load(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return load(self.ca_file), load(self.key_file), load(self.cert_file)


def _log_retry(state: Any) -> None:
    exc = state.outcome.exception() if state.outcome else None
    sleep = state.next_action.sleep if state.next_action else 0.0
    log.info("retrying in %.2fs after attempt %d: %s", sleep, state.attempt_number, exc)


def _kwargs(policy: RetryPolicy, timeout_s: float) -> dict:
    import tenacity  # on first call: keeps `import orchestrator.client` lean

    return {
        "retry": tenacity.retry_if_exception_type(ServingUnavailable),
        "stop": tenacity.stop_after_attempt(policy.attempts)
        | tenacity.stop_before_delay(timeout_s),
        "wait": tenacity.wait_exponential_jitter(
            multiplier=policy.initial_backoff_s,
            max=policy.max_backoff_s,
            exp_base=policy.multiplier,
            jitter=policy.jitter_s,
        ),
        "before_sleep": _log_retry,
        "reraise": True,
    }


def retrying(policy: RetryPolicy, timeout_s: float) -> tenacity.Retrying:
    import tenacity

    return tenacity.Retrying(**_kwargs(policy, timeout_s))


def async_retrying(policy: RetryPolicy, timeout_s: float) -> tenacity.AsyncRetrying:
    import tenacity

    return tenacity.AsyncRetrying(**_kwargs(policy, timeout_s))


def _out_of_time(what: str, timeout_s: float, model: str | None, address: str):
    return DeadlineExceeded(
        f"{what} ran out of its {timeout_s:g}s deadline", model=model, address=address
    )


def call(
    attempt: Callable[[float], T],
    policy: RetryPolicy,
    timeout_s: float,
    *,
    what: str,
    model: str | None,
    address: str,
) -> T:
    """attempt(remaining seconds) once; on ServingUnavailable, retry it with tenacity.

    The first try runs without tenacity (it costs ~10 us a call); a retry loop starts only
    after a transient failure, counting that failure as its first attempt.
    """
    deadline = time.monotonic() + timeout_s
    try:
        return attempt(timeout_s)
    except ServingUnavailable as e:
        if policy.attempts <= 1:
            raise
        first = e
    return retry_after(
        first, attempt, policy, timeout_s, deadline, what=what, model=model, address=address
    )


def retry_after(
    first: ServingUnavailable,
    attempt: Callable[[float], T],
    policy: RetryPolicy,
    timeout_s: float,
    deadline: float,
    *,
    what: str,
    model: str | None,
    address: str,
) -> T:
    """The retries of `call` after its first try failed with `first` (raised if none is left).

    For callers that make the first try themselves, without a closure per call; `deadline`
    is time.monotonic() + timeout_s taken before that first try.
    """
    pending: list[ServingUnavailable] = [first]
    for state in retrying(policy, timeout_s):
        with state:
            if pending:
                raise pending.pop()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _out_of_time(what, timeout_s, model, address)
            return attempt(remaining)
    raise AssertionError("unreachable")  # pragma: no cover


async def call_async(
    attempt: Callable[[float], Awaitable[T]],
    policy: RetryPolicy,
    timeout_s: float,
    *,
    what: str,
    model: str | None,
    address: str,
) -> T:
    """`call` for coroutines."""
    deadline = time.monotonic() + timeout_s
    try:
        return await attempt(timeout_s)
    except ServingUnavailable as e:
        if policy.attempts <= 1:
            raise
        pending: list[ServingUnavailable] = [e]
    async for state in async_retrying(policy, timeout_s):
        with state:
            if pending:
                raise pending.pop()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _out_of_time(what, timeout_s, model, address)
            return await attempt(remaining)
    raise AssertionError("unreachable")  # pragma: no cover

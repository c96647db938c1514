"""Retry policy: which failures are retried, how long to wait, and a sleep that tests can replace."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Replies that an idempotent call retries."""


@dataclass(frozen=True)
class RetryPolicy:
    """How the client retries.

    Idempotent calls (list, info, download, delete, get session, re-readable uploads) retry on connection
    errors and on :data:`RETRY_STATUSES`. ``execute`` is retried only when the request provably never reached
    the service (a connect failure) or was refused with 429, so a code execution never runs twice.

    A 429 is retried only when it says when (``Retry-After``, waited as asked, up to ``max_retry_after``): a 429
    without it is how a full pool answers, and a slot frees only when a session is deleted or idles past the pool's
    cooldown (minutes), so sending again within seconds would only add load (the client raises
    :class:`~azure_sessions.errors.PoolFullError` instead).

    :param attempts: total attempts per call, the first one included (1 disables retries). Default 4.
    :param backoff_base: first back-off delay in seconds, doubled on every further attempt. Default 0.5.
    :param backoff_cap: longest computed back-off, in seconds. Default 20.
    :param jitter: random fraction added to or removed from each computed delay (0.2 → ±20 %). Default 0.2.
    :param max_retry_after: longest ``Retry-After`` honoured, in seconds. Default 60.
    :param sleep: the function used to wait (tests inject a recorder). Default :func:`time.sleep`.
    """

    attempts: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 20.0
    jitter: float = 0.2
    max_retry_after: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    @classmethod
    def no_retries(cls) -> RetryPolicy:
        """A policy that tries every call exactly once."""
        return cls(attempts=1)

    def backoff(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1`` (``attempt`` counts from 1), with jitter."""
        delay = min(self.backoff_cap, self.backoff_base * (2 ** (attempt - 1)))
        if self.jitter:
            delay *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, delay)

    def delay_after_failure(self, attempt: int, exc: BaseException, *, idempotent: bool) -> float | None:
        """Seconds to wait before sending a call again after attempt ``attempt`` got no reply (``exc``), or None to
        give up: the attempts are used up, or the call is not idempotent and its request may have reached the
        service (anything but a connect failure, see :func:`is_connect_failure`)."""
        if attempt >= self.attempts or not (idempotent or is_connect_failure(exc)):
            return None
        return self.backoff(attempt)

    def delay_after_reply(
        self, attempt: int, status: int, headers: Mapping[str, str], *, idempotent: bool
    ) -> float | None:
        """Seconds to wait before sending a call again after attempt ``attempt`` got the error reply ``status``, or
        None to give up: the attempts are used up, the status is not in :data:`RETRY_STATUSES`, the call is not
        idempotent and the status is not 429 (the one refusal that proves the service did not act), or a 429 does
        not say when to come back (a full pool)."""
        if attempt >= self.attempts or status not in RETRY_STATUSES or not (idempotent or status == 429):
            return None
        if status == 429 and parse_retry_after(headers) is None:
            return None
        return self.delay(attempt, headers)

    def delay(self, attempt: int, headers: Mapping[str, str] | None = None) -> float:
        """Delay before the next attempt: the server's ``Retry-After`` when given, else exponential back-off."""
        if headers is not None:
            retry_after = parse_retry_after(headers)
            if retry_after is not None:
                return min(retry_after, self.max_retry_after)
        return self.backoff(attempt)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms``/``x-ms-retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / 1000.0)
            except ValueError:
                pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def is_connect_failure(exc: BaseException) -> bool:
    """True when ``exc`` proves the request never reached the server (nothing was sent).

    That is a connect timeout, a refused connection or a name-resolution failure. A read timeout or a
    connection dropped after sending is *not* one: the service may have acted on the request.
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError) or isinstance(exc, requests.exceptions.ReadTimeout):
        return False
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (NewConnectionError, ConnectTimeoutError)):
            return True
        stack.append(getattr(item, "reason", None))
        if isinstance(item, BaseException):
            stack.extend(arg for arg in item.args if isinstance(arg, BaseException))
            stack.append(item.__cause__)
    return False

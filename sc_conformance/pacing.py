"""A token bucket that bounds how many requests per second the suite sends.

Fuzzing a production server must not look like a denial of service; every fuzz and
security request waits for a token, so the rate holds however fast the server is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """Allows *rate* requests per second on average, bursts up to *burst*.

    A ``rate`` of None means no limit, so callers need not special-case the
    embedded mock. The clock and the sleep are injectable for tests.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive, or None for no limit")
        self.rate = rate
        self.burst = max(1, burst if burst is not None else int(rate or 1))
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(self.burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, waiting until one is free; return the seconds waited."""
        if self.rate is None:
            return 0.0

        with self._lock:
            now = self._clock()
            self._tokens = min(
                self.burst, self._tokens + (now - self._updated) * self.rate
            )
            self._updated = now
            self._tokens -= 1
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate

        if wait > 0:
            self._sleep(wait)
        return wait

"""Retry policy: how often and how long to wait between attempts (exponential backoff)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries per candidate; waits ``base_delay * factor**i`` seconds (at most ``max_delay``)."""

    attempts: int = 5
    base_delay: float = 2.0
    factor: float = 2.0
    max_delay: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        return min(self.max_delay, self.base_delay * self.factor**attempt)

    def wait(self, attempt: int) -> None:
        self.sleep(self.delay(attempt))

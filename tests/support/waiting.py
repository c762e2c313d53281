"""The one polling loop of the tests: wait on a condition with a deadline (never a bare
sleep as synchronisation); each caller says what a missed deadline means."""

from __future__ import annotations

import time


def poll_until(condition, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` every ``interval`` s until it is true (True) or ``timeout`` s
    have passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True

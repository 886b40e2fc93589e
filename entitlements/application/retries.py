"""Another writer saved first (it bypassed the writer lock): how often a save is tried
again, and how long to wait before each try."""

from __future__ import annotations

import random
import time

RETRIES = 30  # optimistic-concurrency retries per command, with jittered backoff


def backoff(attempt: int) -> None:
    """Wait a little (randomly, so two writers part ways)."""
    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))

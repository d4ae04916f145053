"""Retry transient storage errors with exponential backoff, then fail with a clear message."""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from .errors import CheckpointError

log = logging.getLogger(__name__)
T = TypeVar("T")

NOT_TRANSIENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError, TypeError)


def with_retries(fn: Callable[[], T], *, what: str, attempts: int, backoff_s: float, max_backoff_s: float = 30.0) -> T:
    delay = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except NOT_TRANSIENT:
            raise
        except Exception as e:  # storage clients raise many types for one dropped connection
            if attempt == attempts:
                raise CheckpointError(
                    f"{what} failed after {attempts} attempts ({type(e).__name__}: {str(e)[:200]}); "
                    "the storage endpoint may be down. Completed checkpoints are intact: re-run with "
                    "resume=auto once it is back."
                ) from e
            log.warning("%s failed (attempt %d/%d, %s); retrying in %.1fs", what, attempt, attempts,
                        type(e).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
    raise AssertionError("unreachable")

"""Retry transient storage errors with exponential backoff, then fail with a clear message."""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from emorec.errors import EmorecError, StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

# emorec's own errors (a path refused, a checkpoint that does not verify) are the same on every attempt.
NOT_TRANSIENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError, TypeError,
                 EmorecError)

# What the user can do once the endpoint is back: a training run resumes, anything else is simply run again.
AFTER_TRAINING = "Completed checkpoints are intact: re-run with resume=auto once it is back."
AFTER_OTHER = "Run the command again once it is back."


def with_retries(fn: Callable[[], T], *, what: str, attempts: int, backoff_s: float, max_backoff_s: float = 30.0,
                 training: bool = False) -> T:
    """fn(), retried on transient errors; after the last attempt an error that says what failed and, for a training
    run's storage (`training`), that its checkpoints survive, else that the command can simply be run again.
    A StorageError, never a CheckpointError: an outage is not a corrupt checkpoint to skip on resume."""
    delay = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except NOT_TRANSIENT:
            raise
        except Exception as e:  # storage clients raise many types for one dropped connection
            if attempt == attempts:
                raise StorageError(f"{what} failed after {attempts} attempts ({type(e).__name__}: {str(e)[:200]}); "
                                   f"the storage endpoint may be down. {AFTER_TRAINING if training else AFTER_OTHER}") from e
            log.warning("%s failed (attempt %d/%d, %s); retrying in %.1fs", what, attempt, attempts,
                        type(e).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
    raise AssertionError("unreachable")

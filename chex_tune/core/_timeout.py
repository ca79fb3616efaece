"""A wall-clock limit for code that may run away (graph tracing of unusual models)."""

from __future__ import annotations

import contextlib
import signal
import threading


class TimeLimitExceeded(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise ``TimeLimitExceeded`` inside the block after ``seconds``.

    Uses SIGALRM, so it only acts in the main thread of a POSIX process; elsewhere (worker threads,
    Windows) the block runs without a limit rather than failing.
    """
    usable = (seconds is not None and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def _raise(signum, frame):
        raise TimeLimitExceeded(f"time limit of {seconds} s exceeded")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

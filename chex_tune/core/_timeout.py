"""A wall-clock limit for code that may run away (graph tracing of unusual models), in any thread.

SIGALRM only reaches the main thread, and Ray Tune runs function trainables in a worker thread, so the
limit is kept by a watchdog thread instead: at the deadline it raises ``TimeLimitExceeded`` in the
thread running the block (CPython's ``PyThreadState_SetAsyncExc``), and again every 0.1 s until the
block ends, because code in the block may swallow the first one (torch-pruning retries a failed
forward pass under a bare ``except:``). The exception arrives between Python bytecodes: one long C
call (a single huge convolution) finishes first, then the block stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading

REPEAT_S = 0.1  # after the deadline, raise again this often until the block has ended


class TimeLimitExceeded(Exception):
    def __init__(self, message: str = "time limit exceeded"):
        super().__init__(message)


def _raise_in(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in thread ``thread_id`` at its next bytecode; ``None`` clears a pending one."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc_type) if exc_type is not None else None)


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise ``TimeLimitExceeded`` inside the block after ``seconds`` (``None``: no limit), in whichever
    thread runs it. Nothing is raised once the block has ended."""
    if seconds is None or not hasattr(ctypes, "pythonapi"):  # not CPython: run without a limit
        yield
        return
    target, lock, ended, fired = threading.get_ident(), threading.Lock(), threading.Event(), []

    def watchdog():
        wait = seconds
        while not ended.wait(wait):
            with lock:
                if ended.is_set():
                    return
                _raise_in(target, TimeLimitExceeded)
                fired.append(True)
            wait = REPEAT_S

    threading.Thread(target=watchdog, name="chex-time-limit", daemon=True).start()
    try:
        yield
    except TimeLimitExceeded:
        raise TimeLimitExceeded(f"time limit of {seconds} s exceeded") from None
    finally:
        while True:  # end the watchdog for sure, even if one more exception lands while doing so
            try:
                with lock:
                    ended.set()
                    if fired:
                        _raise_in(target, None)  # one set but not yet raised must not escape the block
                break
            except TimeLimitExceeded:
                continue

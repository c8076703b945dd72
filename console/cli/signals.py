"""SIGINT and SIGTERM, handled from the first moment of a run.

The first signal stops gracefully: while the consumer starts or runs, it asks the consumer to
stop (fetching stops, batches in hand finish, checkpoints are flushed); before there is a
consumer (the stream being described, the database opened) it cancels the start-up, which gives
back what it took; before the event loop runs at all (the command's imports and checks, when
nothing is open yet) it ends the command at once. A second signal exits at once, with 130:
checkpoints hold the last flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

FORCED_EXIT = 130


class StartupInterrupted(BaseException):
    """A signal before the event loop took the signals over: nothing was opened yet."""


@contextlib.contextmanager
def before_the_loop() -> Iterator[None]:
    """From a command's first line until :meth:`SignalStop.install` takes over on the loop,
    SIGINT and SIGTERM raise StartupInterrupted (Python's defaults would kill the process, or
    raise KeyboardInterrupt out of whatever it was doing)."""

    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only: a caller there handles them
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise StartupInterrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class SignalStop:
    def __init__(self, say: Callable[[str], None]) -> None:
        """``say`` prints one line (the forced exit's)."""
        self._say = say
        self._task: asyncio.Task[object] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: Callable[[str], None] | None = None
        self._installed: list[signal.Signals] = []
        self.received = 0
        self.interrupted: str | None = None  # the signal that cancelled the start-up

    def install(self) -> None:
        """On the running loop, for the task that runs the program."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
                self._installed.append(sig)

    def remove(self) -> None:
        if self._loop is not None:
            for sig in self._installed:
                self._loop.remove_signal_handler(sig)
        self._installed = []

    def attach(self, stop: Callable[[str], None]) -> None:
        """From now on the first signal calls ``stop(reason)`` (a consumer's request_stop)."""
        self._stop = stop

    def _on_signal(self, sig: signal.Signals) -> None:
        self.received += 1
        name = sig.name
        if self.received > 1:
            self._say(f"second {name}: exiting now; checkpoints hold the last flush")
            os._exit(FORCED_EXIT)
        if self._stop is not None:
            self._stop(f"{name}: stopping (finishing batches in hand, flushing checkpoints)")
        elif self._task is not None:
            self.interrupted = name
            self._task.cancel()

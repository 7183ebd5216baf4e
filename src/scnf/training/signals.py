"""SIGINT/SIGTERM as a request to stop training after the current step."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

_stop_signal: int | None = None  # set by stop_on_signals' handler, read by Trainer.fit
_fitting = 0  # Trainer.fit loops running (the handler defers to them only)


@contextmanager
def stop_on_signals(signals=(signal.SIGINT, signal.SIGTERM)):
    """While active, SIGINT and SIGTERM ask a running :meth:`Trainer.fit` to stop after its
    current step: it writes a checkpoint and raises
    :class:`~scnf.errors.TrainingInterrupted`. Outside a training loop, and for a second
    signal, the previous handler acts at once. Outside the main thread this does nothing."""
    global _stop_signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signals}

    def handler(signum, frame):
        global _stop_signal
        if _fitting and _stop_signal is None:
            _stop_signal = signum
            return
        prev = previous[signum]
        if callable(prev):
            prev(signum, frame)
        elif prev != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    _stop_signal = None
    for s in signals:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _stop_signal = None


def enter_fit() -> None:
    """A training loop starts: until :func:`exit_fit`, the first signal is deferred to it."""
    global _fitting
    _fitting += 1


def exit_fit() -> None:
    global _fitting
    _fitting -= 1


def requested_stop() -> int | None:
    """The signal that asked the running training loop to stop, if any."""
    return _stop_signal

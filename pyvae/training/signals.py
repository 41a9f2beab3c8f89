"""SIGINT/SIGTERM as a request to stop: the loop finishes its unit of work, saves, and stops."""
import signal
import threading


class StopSignals:
    """While entered (in the main thread, and when ``active``), SIGINT and SIGTERM set ``signum``
    instead of interrupting; the loop that reads it stops at the end of its step or batch. Used
    by training (checkpoint, then stop) and by resumable evaluation (save progress, then stop)."""

    def __init__(self, active: bool = True):
        self.active, self.signum, self.previous = active, None, {}

    def __enter__(self):
        self.signum = None
        if not self.active or threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signal.Signals(signum)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
        return False

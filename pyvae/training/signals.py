"""SIGINT/SIGTERM during training: the loop finishes its step, checkpoints and stops."""
import signal
import threading


class SignalGuard:
    """While training with a run directory, SIGINT/SIGTERM ask the loop to checkpoint and stop."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.previous = {}

    def __enter__(self):
        self.trainer._stop_signal = None
        if self.trainer.out is None or threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.trainer._stop_signal = signal.Signals(signum)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False

"""Progress bars as tqdm draws them: ``progress=None`` shows one where a terminal is attached
(tqdm's ``disable=None``), True always, False never."""
from typing import Optional


def progress_disabled(progress: Optional[bool]) -> Optional[bool]:
    """tqdm's ``disable`` for a ``progress`` argument (None: tqdm decides by the terminal)."""
    return None if progress is None else not progress

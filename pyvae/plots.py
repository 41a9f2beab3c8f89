"""The old import path of ``pyvae.reports.plots`` (matplotlib is imported only when this is)."""
import sys

from .reports import plots as _plots

sys.modules[__name__] = _plots

"""The Python blocks of docs/training.md and docs/runs.md run, and print what the pages show.

Blocks are taken as tests/test_docs.py takes them (a ```text block right after a python block is
its output) and compared the same way (``same_output``), after the seconds of log lines, which
vary, are blanked. Fragments of the training loop and the blocks that train on real MNIST for
minutes are not run here (``SKIP``: their first lines)."""
import contextlib
import io
import logging
import re

import pytest
import torch

import pyro

from test_docs import blocks, same_output

SKIP = ("def model(self, x):", "loss = objective.differentiable_loss",
        "import pyro, pyvae\n\ntrain = pyvae.load_dataset(\"mnist\"")
SECONDS = re.compile(r"\d+\.\d s\b")


def _runnable(page):
    return [(code, out) for code, out in blocks(page) if not code.startswith(SKIP)]


@pytest.mark.parametrize("page", ["training.md", "runs.md"])
def test_python_blocks_run_and_print_what_the_page_shows(page):
    runnable = _runnable(page)
    assert runnable
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    threads = torch.get_num_threads()
    try:
        for code, expected in runnable:
            root.handlers[:] = []  # as in a fresh interpreter: basicConfig configures the root
            out = io.StringIO()
            pyro.set_rng_seed(0)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                exec(compile(code, f"docs/{page}", "exec"), {})
                for handler in root.handlers:
                    handler.flush()
            if expected is not None:
                actual, shown = SECONDS.sub("# s", out.getvalue()), SECONDS.sub("# s", expected)
                assert same_output(actual, shown), f"printed:\n{out.getvalue()}\nshown:\n{expected}"
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("pyvae").setLevel(logging.NOTSET)
        torch.set_num_threads(threads)

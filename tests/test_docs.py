"""The tutorial's code runs, and prints what the page says it prints.

Every ```python block of docs/tutorial-elbo.md runs, in order, in one namespace; a ```text block
right after a python block is the output the page shows, and must match what the code prints
(numbers within a small tolerance, everything else exactly). The Korean page must carry the very
same code and outputs.
"""
import contextlib
import io
import os
import re

import pytest

DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs")
TUTORIALS = ("tutorial-elbo.md", "tutorial-elbo.ko.md")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def blocks(name):
    """[(code, expected_output or None)] for the python blocks of a docs page."""
    text = open(os.path.join(DOCS, name), encoding="utf-8").read()
    fences = re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)
    out = []
    for i, (lang, body) in enumerate(fences):
        if lang == "python":
            nxt = fences[i + 1] if i + 1 < len(fences) else None
            out.append((body, nxt[1] if nxt and nxt[0] == "text" else None))
    return out


def same_output(actual: str, expected: str) -> bool:
    """Equal text, with numbers allowed to differ by 0.01 + 0.1% (float sums vary by platform)."""
    a, e = actual.split(), expected.split()
    if len(a) != len(e):
        return False
    for x, y in zip(a, e):
        nx, ny = NUMBER.findall(x), NUMBER.findall(y)
        if NUMBER.sub("#", x) != NUMBER.sub("#", y) or len(nx) != len(ny):
            return False
        if any(abs(float(p) - float(q)) > 0.01 + 1e-3 * abs(float(q)) for p, q in zip(nx, ny)):
            return False
    return True


def test_same_code_and_outputs_in_both_languages():
    en, ko = blocks(TUTORIALS[0]), blocks(TUTORIALS[1])
    assert len(en) >= 4
    assert en == ko


def test_tutorial_blocks_run_and_print_what_the_page_shows():
    namespace = {"__name__": "tutorial"}
    for i, (code, expected) in enumerate(blocks(TUTORIALS[0])):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code, f"{TUTORIALS[0]}:block{i}", "exec"), namespace)
        if expected is not None:
            assert same_output(buf.getvalue(), expected), (
                f"block {i} printed:\n{buf.getvalue()}\nthe page shows:\n{expected}")


@pytest.mark.parametrize("actual, expected, ok", [
    ("ELBO = -4.569", "ELBO = -4.569", True),
    ("ELBO = -4.571", "ELBO = -4.569", True),
    ("ELBO = -4.700", "ELBO = -4.569", False),
    ("ELBO = -4.569", "IWAE = -4.569", False),
])
def test_same_output(actual, expected, ok):
    assert same_output(actual, expected) is ok

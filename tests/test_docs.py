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


# ------------------------------------------------------------------------------ docs/cli.md
CLI_DOC = os.path.join(DOCS, "cli.md")
CLI_INTRO = """# The `pyvae` command

`pyvae COMMAND --help` prints the same text. Errors print one line on stderr and exit with
status 2; `--debug` shows the traceback instead. The flag lists below are the commands' own
`--help` output, written by `python tests/test_docs.py --write-cli` (a test checks that every
flag of every command appears here).

- `pyvae train`: fit a VAE by SVI into a run directory (see [training.md](training.md)).
- `pyvae evaluate`: importance-weighted log p(x), ELBO, gap, active units of a run.
- `pyvae plot`: figures of a run or of a comparison.
- `pyvae compare`: one VAE per variational family, side by side (see [compare.md](compare.md)).
- `pyvae snr`: signal-to-noise ratio of a run's gradients against k, per estimator (see
  [estimators.md](estimators.md)).

Typical session:

```bash
pyvae train --epochs 10 --out runs/mnist
pyvae evaluate runs/mnist --num-samples 5000
pyvae plot runs/mnist                       # runs/mnist/figures/*.png
pyvae compare --guides diagonal,iaf --epochs 10 --num-samples 1000 --out runs/compare
pyvae plot runs/compare                     # the gap plot again, e.g. --format pdf
```
"""


def _parsers():
    from pyvae.cli import _build_parser

    parser = _build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return parser, dict(sub.choices)


def cli_markdown() -> str:
    """docs/cli.md from the parsers' own --help text (100 columns)."""
    os.environ["COLUMNS"] = "100"
    parser, commands = _parsers()
    parts = [CLI_INTRO, "## pyvae", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in commands.items():
        parts += [f"## pyvae {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def test_cli_doc_lists_every_command_and_flag():
    text = open(CLI_DOC, encoding="utf-8").read()
    _, commands = _parsers()
    for name, sub in commands.items():
        assert f"## pyvae {name}" in text, f"docs/cli.md lacks `pyvae {name}`: run python tests/test_docs.py --write-cli"
        section = text.split(f"## pyvae {name}", 1)[1].split("\n## pyvae ", 1)[0]
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in section, (f"docs/cli.md: `pyvae {name}` lacks {flag}; "
                                         "run python tests/test_docs.py --write-cli")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write-cli"]:
        with open(CLI_DOC, "w", encoding="utf-8") as f:
            f.write(cli_markdown())
        print(f"wrote {CLI_DOC}")

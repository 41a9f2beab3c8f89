"""The tutorials' notebooks match their markdown, and the English one runs end to end.

docs/tutorial-elbo.md and docs/tutorial-elbo.ko.md are the source; docs/*.ipynb are paired with
them by jupytext (jupytext.toml) and rewritten with
``jupytext --sync docs/tutorial-elbo.md docs/tutorial-elbo.ko.md``. Needs the ``docs`` extra
(jupytext, nbclient, ipykernel): ``pip install -e ".[docs]"``.
"""
import os

import pytest

jupytext = pytest.importorskip("jupytext", reason="jupytext is not installed: pip install -e \".[docs]\"")
nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed: pip install -e \".[docs]\"")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed: pip install -e \".[docs]\"")
pytest.importorskip("ipykernel", reason="ipykernel is not installed: pip install -e \".[docs]\"")

from test_docs import DOCS, blocks, same_output  # noqa: E402

PAIRS = [("tutorial-elbo.md", "tutorial-elbo.ipynb"), ("tutorial-elbo.ko.md", "tutorial-elbo.ko.ipynb")]


def cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("markdown, notebook", PAIRS)
def test_notebook_matches_its_markdown(markdown, notebook):
    from_markdown = jupytext.read(os.path.join(DOCS, markdown))
    committed = nbformat.read(os.path.join(DOCS, notebook), as_version=4)
    assert cells(committed) == cells(from_markdown), (
        f"docs/{notebook} is out of date: run jupytext --sync docs/{markdown}")
    assert sum(c.cell_type == "code" for c in committed.cells) == len(blocks(markdown))


def test_notebook_runs_and_prints_what_the_page_shows():
    nb = nbformat.read(os.path.join(DOCS, PAIRS[0][1]), as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": DOCS}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, (cell, (_, expected)) in enumerate(zip(code, blocks(PAIRS[0][0]))):
        assert not [o for o in cell.outputs if o.output_type == "error"], f"cell {i} raised"
        if expected is not None:
            printed = "".join(o.get("text", "") for o in cell.outputs
                              if o.output_type == "stream" and o.name == "stdout")
            assert same_output(printed, expected), f"cell {i} printed:\n{printed}\nthe page shows:\n{expected}"

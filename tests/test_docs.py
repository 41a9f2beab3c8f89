"""The tutorial's code runs, prints what the page says it prints, and its claims hold.

Every ```python block of docs/tutorial-elbo.md runs, in order, in one namespace; a ```text block
right after a python block is the output the page shows, and must match what the code prints.
Words must be equal. Numbers are compared as what they are:

- a Monte-Carlo estimate printed as ``a ± s``: within four standard errors (``|a - a'| <= 4 s``,
  the larger of the two s, plus the last digit shown), and the two standard errors within a
  factor of three of each other;
- a number printed after ``≈`` (the result of a stochastic training run): within 10% + 0.01;
- any other number (exact values, counts, shapes): within 0.01 + 0.1% (float sums vary by
  platform).

The claims the page makes in words (bounds ordered and tightening, estimates within their error
of the exact value, training raising log p(x)) are checked separately on the values the code
computed. The Korean page must carry the very same code and outputs, and both pages the same
figures, which docs/figures/tutorial.py draws.
"""
import contextlib
import html
import io
import math
import os
import re
import subprocess
import sys

import matplotlib.figure
import pytest
import torch
from matplotlib.image import imread
from matplotlib.patches import Rectangle

import pyvae
from pyvae.cli import build_parser
from pyvae.config import ModelConfig, TrainConfig

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
DOCS = os.path.join(ROOT, "docs")
TUTORIALS = ("tutorial-elbo.md", "tutorial-elbo.ko.md")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")
TOKEN = re.compile(r"(≈\s*)?(-?\d+(?:\.\d+)?(?:e-?\d+)?)(\s*±\s*(\d+(?:\.\d+)?))?")


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


def _numbers(text):
    """(words with numbers replaced by #, [(kind, value, stderr, decimals)])."""
    found = []

    def keep(m):
        approx, value, _, se = m.groups()
        decimals = len(value.split(".")[1]) if "." in value else 0
        kind = "pm" if se is not None else ("approx" if approx else "plain")
        found.append((kind, float(value), float(se) if se is not None else None, decimals))
        return ("≈ " if approx else "") + ("# ± #" if se is not None else "#")

    return " ".join(TOKEN.sub(keep, text).split()), found


def same_output(actual: str, expected: str) -> bool:
    """Equal words; numbers equal within the tolerance their kind allows (module docstring)."""
    words_a, nums_a = _numbers(actual)
    words_e, nums_e = _numbers(expected)
    if words_a != words_e or len(nums_a) != len(nums_e):
        return False
    for (kind, a, se_a, _), (kind_e, e, se_e, dec) in zip(nums_a, nums_e):
        if kind != kind_e:
            return False
        if kind == "pm":
            se = max(se_a, se_e)
            if abs(a - e) > 4 * se + 10 ** -dec + 1e-9:
                return False
            if max(se_a, se_e) > 3 * min(se_a, se_e) + 10 ** -dec + 1e-9:
                return False
        elif kind == "approx":
            if abs(a - e) > 0.1 * abs(e) + 0.01:
                return False
        elif abs(a - e) > 0.01 + 1e-3 * abs(e):
            return False
    return True


def run_tutorial(name=TUTORIALS[0]):
    """Run the page's blocks; return the namespace and what each block printed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        namespace, printed = {"__name__": "tutorial"}, []
        for i, (code, expected) in enumerate(blocks(name)):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                exec(compile(code, f"{name}:block{i}", "exec"), namespace)
            printed.append((buf.getvalue(), expected))
        return namespace, printed
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tutorial():
    return run_tutorial()


def test_same_code_and_outputs_in_both_languages():
    en, ko = blocks(TUTORIALS[0]), blocks(TUTORIALS[1])
    assert len(en) >= 4
    assert en == ko


def test_same_figures_in_both_languages_and_drawn_by_the_script():
    figures = []
    for name in TUTORIALS:
        text = open(os.path.join(DOCS, name), encoding="utf-8").read()
        figures.append(re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", text))
    assert figures[0] == figures[1]
    assert len(figures[0]) >= 4
    script = open(os.path.join(DOCS, "figures", "tutorial.py"), encoding="utf-8").read()
    for path in figures[0]:
        assert os.path.isfile(os.path.join(DOCS, path)), path
        assert os.path.basename(path) in script, f"{path} is not drawn by docs/figures/tutorial.py"


def test_tutorial_blocks_run_and_print_what_the_page_shows(tutorial):
    _, printed = tutorial
    for i, (actual, expected) in enumerate(printed):
        if expected is not None:
            assert same_output(actual, expected), (
                f"block {i} printed:\n{actual}\nthe page shows:\n{expected}")


def test_tutorial_claims(tutorial):
    ns, _ = tutorial
    log_px, exact, est = ns["log_px"], ns["exact_elbo"], ns["elbo_estimate"]
    # every friend is below log p(x), in the order the page shows; estimates agree with exact
    assert exact["prior"] < exact["diagonal"] < exact["full-rank"] <= log_px + 1e-9
    assert abs(exact["full-rank"] - log_px) < 1e-9
    for name in exact:
        assert abs(est[name].mean - exact[name]) <= 4 * est[name].mean_stderr + 1e-6, name
    # the diagonal friend's gap is the closed-form best diagonal KL
    assert abs(log_px - exact["diagonal"] - ns["lg"].best_diagonal_kl()) < 1e-6
    # the two faces of the ELBO agree, and the two KLs differ
    assert abs(ns["reconstruction"] - ns["kl_prior"] - exact["diagonal"]) <= 4 * ns["reconstruction_se"]
    assert abs(ns["kl_prior"] - (log_px - exact["diagonal"])) > 0.5
    # training raised log p_theta(x) to the maximum likelihood, and the gap closed
    steps = ns["training"]
    assert steps[-1][1] > steps[0][1] + 5
    assert steps[-1][1] >= log_px - 0.01                 # at least as likely as the true W
    assert all(b[1] >= a[1] - 0.01 for a, b in zip(steps, steps[1:]))
    assert steps[-1][1] - steps[-1][2] < 0.1             # the final gap
    assert steps[-1][4] < 0.01 < ns["lg"].best_diagonal_kl()  # theta made the posterior axis-aligned
    # IWAE_k: below log p(x) and rising with k, within the standard errors
    for name, bounds in ns["iwae"].items():
        for b in bounds:
            assert b.mean <= log_px + 4 * b.mean_stderr, name
        for a, b in zip(bounds, bounds[1:]):
            assert b.mean >= a.mean - 4 * math.hypot(a.mean_stderr, b.mean_stderr), name
        assert abs(bounds[0].mean - exact[name]) <= 4 * bounds[0].mean_stderr + 1e-6, name
    prior, diagonal = ns["iwae"]["prior"], ns["iwae"]["diagonal"]
    ks = list(ns["ks"])
    assert diagonal[0].mean > prior[0].mean + 10          # the diagonal friend starts far taller
    assert prior[ks.index(30)].mean > diagonal[ks.index(30)].mean  # and is overtaken from k = 30
    assert log_px - prior[-1].mean < 0.05                 # the stranger, asked 1000 times
    assert log_px - diagonal[-1].mean > 0.1               # the too-confident friend


def test_tutorial_prose_numbers(tutorial):
    """Numbers the English and Korean prose quote, against what the code computed."""
    ns, _ = tutorial
    en = open(os.path.join(DOCS, TUTORIALS[0]), encoding="utf-8").read()
    ko = open(os.path.join(DOCS, TUTORIALS[1]), encoding="utf-8").read()
    log_px, exact = ns["log_px"], ns["exact_elbo"]
    quoted = {
        f"{round(log_px - exact['prior']):.0f} nats": f"{round(log_px - exact['prior']):.0f} nats",
        f"{ns['kl_prior']:.2f} nats": f"{ns['kl_prior']:.2f} nats",
        f"{log_px - exact['diagonal']:.2f} nats": f"{log_px - exact['diagonal']:.2f} nats",
        f"{ns['training'][0][1]:.1f} to {ns['training'][-1][1]:.2f}": f"{ns['training'][0][1]:.1f}",
        f"IWAE_1 = {ns['iwae']['diagonal'][0].mean:.2f} against {ns['iwae']['prior'][0].mean:.1f}":
            f"IWAE_1 = {ns['iwae']['diagonal'][0].mean:.2f}",
    }
    for text_en, text_ko in quoted.items():
        assert text_en.replace("-", "−") in en, text_en
        assert text_ko.replace("-", "−") in ko, text_ko


def test_tutorial_terms_are_explained_where_first_used():
    """The analogies both pages tell, and the Korean terms: one rendering each, defined at first use."""
    en = open(os.path.join(DOCS, TUTORIALS[0]), encoding="utf-8").read()
    ko = open(os.path.join(DOCS, TUTORIALS[1]), encoding="utf-8").read()
    for word in ("Morse", "··· ––– ···", "MBTI", "INTJ"):
        assert word in en and (word in ko or word == "Morse"), word
    assert "모스 부호" in ko
    assert "**latent space**" in en and "**잠재 공간**(latent space)" in ko
    # 집안 (family): its first use is where it is defined
    first = ko.index("집안")
    assert "**집안**(family" in ko[first - 4:first + 20], ko[first - 40:first + 40]
    assert en.index("family") == en.index("**family**") + 2
    # "tight" has one Korean rendering (조이다), explained at its first use
    assert "빡빡" not in ko and "(tight:" in ko
    assert ko.index("(tight:") < min(ko.index(w) for w in ("조여", "조인") if w in ko) + 30


def test_code_lines_fit_the_text_column():
    """At 1280 px the text column holds about 110 characters of code (the page contents sit in the
    left column, mkdocs.yml: toc.integrate); longer lines would scroll."""
    for name in (*TUTORIALS, *API_PAGES):
        text = open(os.path.join(DOCS, name), encoding="utf-8").read()
        code = [line for _, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)
                for line in body.splitlines()]
        code += re.findall(r"^    .*$", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M)
        long = [line for line in code if len(line) > 104]
        assert not long, f"{name}: {long[0]!r} is {len(long[0])} characters"


def _figures_module():
    sys.path.insert(0, os.path.join(DOCS, "figures"))
    try:  # docs/figures is a folder of scripts, not a package: on sys.path for this import only
        import tutorial as figures
    finally:
        sys.path.pop(0)
    return figures


def test_figures_script_draws_the_four_figures(tutorial, tmp_path, monkeypatch):
    """``python docs/figures/tutorial.py --out DIR``, on the namespace the tutorial test ran."""
    figures = _figures_module()
    monkeypatch.setattr(figures, "run_tutorial", lambda: tutorial[0])
    threads = torch.get_num_threads()
    try:
        written = figures.main(["--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert [os.path.basename(p) for p in written] == list(figures.FIGURES)

    for name in figures.FIGURES:
        image = imread(str(tmp_path / name))
        assert image.shape[1] >= 900, f"{name} is {image.shape[1]} px wide"  # shown ~700 px wide


def test_compare_table_rows_are_ordered_as_the_tutorial_says():
    """The measured nine-family table (docs/compare.md) that the gap figure is drawn from."""
    rows = _figures_module().compare_table()
    assert len(rows) == 9
    for family, r in rows.items():
        bounds = [r["elbo"]] + [r["iwae"][k] for k in sorted(r["iwae"])] + [r["log_px"]]
        assert bounds == sorted(bounds), family
        assert abs(r["log_px"] - r["elbo"] - r["gap"]) <= 0.02, family


def test_compare_gap_figure_draws_bounds_as_points_and_gaps_as_bars_from_zero(tmp_path, monkeypatch):
    """docs/figures/compare-gap.png: no bar starts where an axis happens to be cut."""
    figures = _figures_module()
    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: saved.append(self))
    rows = figures.compare_table()
    figures.gap_figure(rows, str(tmp_path / "compare-gap.png"))
    bounds, gaps = saved[0].axes
    assert not [p for p in bounds.patches if isinstance(p, Rectangle)]  # the bounds are points
    order = [t.get_text() for t in bounds.get_yticklabels()]
    assert sorted(order) == sorted(rows)
    for i, family in enumerate(order):  # each row's points are the table's ELBO, IWAE_k, log p^(x)
        xs = sorted(float(x) for line in bounds.lines for x, y in zip(line.get_xdata(), line.get_ydata())
                    if y == i and line.get_marker() not in ("None", None, ""))
        r = rows[family]
        assert xs == pytest.approx(sorted([r["elbo"], *r["iwae"].values(), r["log_px"]]))
    bars = [p for p in gaps.patches if isinstance(p, Rectangle)]
    assert len(bars) == len(rows) and gaps.get_xlim()[0] == 0.0
    for bar, family in zip(bars, order):
        assert bar.get_x() == 0.0 and bar.get_width() == pytest.approx(rows[family]["gap"])


@pytest.mark.slow
def test_example_prints_what_the_tutorial_shows():
    """The output of examples/linear_gaussian_exact.py that both tutorials quote (about a minute)."""
    for name in TUTORIALS:
        text = open(os.path.join(DOCS, name), encoding="utf-8").read()
        match = re.search(r"```console\n\$ python (examples/linear_gaussian_exact.py[^\n]*)\n```\n\n"
                          r"```text\n(.*?)```", text, flags=re.S)
        assert match, f"{name} does not quote the example"
        command, expected = match.groups()
    proc = subprocess.run([sys.executable, *command.split()], capture_output=True, text=True,
                          cwd=ROOT, timeout=1200, env={**os.environ, "PYTHONPATH": os.path.abspath(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert same_output(proc.stdout, expected), proc.stdout


@pytest.mark.parametrize("actual, expected, ok", [
    ("log p(x) = -3.739", "log p(x) = -3.739", True),
    ("log p(x) = -3.745", "log p(x) = -3.739", True),
    ("log p(x) = -3.760", "log p(x) = -3.739", False),
    ("ELBO = -4.569", "IWAE = -4.569", False),
    ("ELBO = -4.569 ± 0.003", "ELBO = -4.575 ± 0.003", True),
    ("ELBO = -4.569 ± 0.003", "ELBO = -4.600 ± 0.003", False),
    ("ELBO = -4.569 ± 0.003", "ELBO = -4.569 ± 0.030", False),
    ("ELBO = -4.569 ± 0.003", "ELBO = -4.569", False),
    ("ESS ≈ 190 of 1000", "ESS ≈ 180 of 1000", True),
    ("ESS ≈ 190 of 1000", "ESS ≈ 150 of 1000", False),
])
def test_same_output(actual, expected, ok):
    assert same_output(actual, expected) is ok


# ------------------------------------------------------------------------------ the API reference
API_PAGES = ("api.md", "api-models.md", "api-data.md", "api-evaluation.md", "api-refinement.md",
             "api-components.md", "api-figures.md")


def test_every_public_name_is_on_an_api_page_and_every_page_in_the_nav():
    text = "\n".join(open(os.path.join(DOCS, name), encoding="utf-8").read() for name in API_PAGES)
    documented = set(re.findall(r"^::: pyvae\.([\w.]+)", text, flags=re.M))
    for name in pyvae.__all__:
        assert name in documented or any(d.startswith(name + ".") for d in documented), (
            f"pyvae.{name} is on no API page")
    nav = open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8").read()
    for name in API_PAGES:
        assert re.search(rf"^\s*- {re.escape(name)}$", nav, flags=re.M), f"{name} is not in the nav"


@pytest.mark.parametrize("page", API_PAGES)
def test_api_page_example_runs_and_prints_what_the_page_shows(page):
    examples = blocks(page)
    assert len(examples) == 1 and examples[0][1] is not None, f"{page} needs one example with its output"
    code, expected = examples[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code, f"{page}:example", "exec"), {"__name__": "example"})
    finally:
        torch.set_num_threads(threads)
    assert same_output(buf.getvalue(), expected), f"{page} printed:\n{buf.getvalue()}\nthe page shows:\n{expected}"


def test_signatures_show_the_config_defaults_as_values():
    """docs/griffe_extensions.py, as mkdocs.yml loads it: each default is its field's value."""
    package = _griffe_package()
    vae = {p.name: p.default for p in package["VAE"].members["__init__"].parameters}
    trainer = {p.name: p.default for p in package["Trainer"].members["__init__"].parameters}
    model_fields = {p.name: p.default for p in package["models.config.ModelConfig"].members["__init__"].parameters}
    for name in ("z_dim", "hidden", "activation", "likelihood", "guide", "prior", "arch"):
        assert vae[name] == repr(getattr(ModelConfig, name)) == model_fields[name], name
    assert (vae["z_dim"], vae["hidden"], vae["activation"]) == ("50", "(200, 200)", "'tanh'")
    # the Trainer's training options are TrainConfig's fields (its **options), shown there
    train_fields = {p.name: p.default
                    for p in package["training.config.TrainConfig"].members["__init__"].parameters}
    assert "options" in trainer
    for name in ("lr", "batch_size", "epochs", "seed"):
        assert train_fields[name] == repr(getattr(TrainConfig, name)), name
    assert package["models.config.ModelConfig"].members["z_dim"].value == "50"
    # no default anywhere in the package is left as a config attribute's name
    left = [f"{obj.path}({p.name}={p.default})" for obj in _griffe_functions(package)
            for p in obj.parameters if re.fullmatch(r"\w*Config\.\w+", str(p.default))]
    assert not left, left


_PACKAGE = []


def _griffe_package():
    """pyvae as griffe loads it for the API pages (mkdocs.yml: paths [.], the LiteralDefaults
    and InheritedArgs extensions), loaded once per test session."""
    griffe = pytest.importorskip("griffe", reason="griffe is not installed: pip install -e \".[docs]\"")
    if not _PACKAGE:
        path = os.path.join(DOCS, "griffe_extensions.py")
        extensions = griffe.load_extensions(path + ":LiteralDefaults", path + ":InheritedArgs")
        _PACKAGE.append(griffe.load("pyvae", search_paths=[ROOT], extensions=extensions))
    return _PACKAGE[0]


def _shown(name):
    """Whether mkdocstrings' default filter (``!^_[^_]``) keeps a member named ``name``."""
    return not re.match(r"_[^_]", name)


def _api_objects(package):
    """{path: griffe object} of every function and class the API pages render: each ``:::``
    target, a module's own members and the public names it imports (``__all__``), a class's
    own methods (``__init__`` merged into the class, mkdocs.yml), recursively. A member shows
    only where it or one of its members carries a docstring (mkdocstrings' default)."""
    text = "\n".join(open(os.path.join(DOCS, name), encoding="utf-8").read() for name in API_PAGES)
    found = {}

    def visit(obj):
        obj = obj.final_target if obj.is_alias else obj
        if obj.path in found:
            return
        if obj.is_function or obj.is_class:
            found[obj.path] = obj
        if obj.is_module or obj.is_class:
            for name, member in obj.members.items():
                if not _shown(name) or name == "__init__":
                    continue
                if member.is_alias and not member.is_public:  # imported, not re-exported
                    continue
                target = member.final_target if member.is_alias else member
                if not (target.is_function or target.is_class):  # (modules: show_submodules off)
                    continue
                if not target.has_docstrings:
                    continue
                visit(member)

    for path in re.findall(r"^::: (pyvae[\w.]*)", text, flags=re.M):
        visit(package[path.split(".", 1)[1]] if "." in path else package)
    return found


def _parameters(obj):
    """The parameters a page shows for ``obj`` (a class: its ``__init__``'s), without self/cls."""
    if obj.is_class:
        init = obj.all_members.get("__init__")
        if init is None:
            return []
        init = init.final_target if init.is_alias else init
        parameters = init.parameters
    else:
        parameters = obj.parameters
    names = [p.name for p in parameters]
    if names and names[0] in ("self", "cls") and (obj.is_class or obj.parent.is_class):
        names = names[1:]
    return names


def _documented(obj):
    """The names in the Args sections the page shows for ``obj`` (a class: its docstring's and
    its own ``__init__``'s; a dataclass's fields may be its Attributes), stars stripped
    (``**options``)."""
    kinds = ("parameters", "attributes") if "dataclass" in obj.labels else ("parameters",)
    docstrings = [obj.docstring]
    if obj.is_class and "__init__" in obj.members and not obj.members["__init__"].is_alias:
        docstrings.append(obj.members["__init__"].docstring)
    names = set()
    for docstring in docstrings:
        if docstring is None:
            continue
        for section in docstring.parse("google", warn_missing_types=False, warnings=False):
            if section.kind.value in kinds:
                names.update(p.name.lstrip("*") for p in section.value)
    return names


def missing_args():
    """``module.func: param`` for every parameter of a rendered API object that its docstring's
    Args section does not name (``module.func: no docstring`` for an undocumented one)."""
    missing = []
    for path, obj in sorted(_api_objects(_griffe_package()).items()):
        if not obj.docstring:
            missing.append(f"{path}: no docstring")
            continue
        documented = _documented(obj)
        missing += [f"{path}: {name}" for name in _parameters(obj) if name not in documented]
    return missing


def test_api_objects_are_the_pages_targets_and_their_members():
    objects = _api_objects(_griffe_package())
    for path in ("pyvae.infer.evaluate.iwae_bound", "pyvae.training.trainer.Trainer",
                 "pyvae.run.directory.Run", "pyvae.run.directory.Run.evaluate",
                 "pyvae.models.guides.Flow", "pyvae.config.option"):
        assert path in objects, path
    assert not [p for p in objects if re.search(r"\._[^_]", p)]  # private names are not shown
    assert _parameters(objects["pyvae.infer.evaluate.iwae_bound"])[:3] == ["model", "guide", "x"]


def test_every_parameter_of_the_api_is_in_its_docstrings_args():
    """Google style: each parameter a rendered signature shows has an ``Args:`` entry."""
    missing = missing_args()
    assert not missing, f"{len(missing)} parameters lack an Args entry:\n" + "\n".join(missing)


def _griffe_functions(obj):
    for member in obj.members.values():
        if member.is_alias:
            continue
        if member.is_function:
            yield member
        elif member.is_class or member.is_module:
            yield from _griffe_functions(member)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The documentation site, built as CI builds it (``mkdocs build --strict``)."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e \".[docs]\"")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed: pip install -e \".[docs]\"")

    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1",
                               "PYTHONPATH": os.path.abspath(ROOT)})
    assert proc.returncode == 0, proc.stderr
    return out


def _page(site, path):
    return (site / path / "index.html").read_text(encoding="utf-8")


def test_site_korean_tutorial_is_served_in_korean(site):
    ko, en = _page(site, "tutorial-elbo.ko"), _page(site, "tutorial-elbo")
    assert '<html lang="ko"' in ko and '<html lang="en"' in en
    assert 'placeholder="검색"' in ko and 'placeholder="Search"' in en  # material's own labels
    assert 'aria-label="목차"' in ko and 'aria-label="목차"' not in en
    for page in (ko, en):
        assert "stylesheets/extra.css" in page


HANGUL = re.compile("[\uac00-\ud7a3]")


def _nav_titles(page):
    """The section and page titles of the site navigation on a built page (not its contents)."""
    found = re.findall(r'<(?:a href="(?!#)[^"]*"|label)\s+class="md-nav__link[^"]*"[^>]*>\s*'
                       r'<span class="md-ellipsis">(.*?)</span>', page, flags=re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", "", title)).split()) for title in found]


def test_site_korean_tutorial_has_a_korean_navigation(site):
    """On the Korean page every section and page of the navigation has its Korean title
    (mkdocs.yml: extra.nav_translations.ko); the English tutorial, written after it, keeps its own."""
    ko, en = _nav_titles(_page(site, "tutorial-elbo.ko")), _nav_titles(_page(site, "tutorial-elbo"))
    assert len(ko) > 25
    assert [t for t in ko if not HANGUL.search(t)] == []
    for title in ("홈", "튜토리얼", "사용 안내", "학습", "결과", "API 참조", "키로 이해하는 ELBO (영어)"):
        assert title in ko, title
    assert "User guide" not in ko and "Training" not in ko
    assert [t for t in en if HANGUL.search(t)] == ["키로 이해하는 ELBO (한국어)"]
    for title in ("Home", "Tutorial", "User guide", "Training", "Results", "API reference"):
        assert title in en, title


def _small_site(tmp_path, translations):
    """mkdocs build --strict of a three-page site with this project's theme override and hook."""
    pytest.importorskip("material", reason="mkdocs-material is not installed: pip install -e \".[docs]\"")
    for name, text in {"index.md": "# Home page", "a.md": "# Page A", "a.ko.md": "# 쪽 A"}.items():
        (tmp_path / "docs").mkdir(exist_ok=True)
        (tmp_path / "docs" / name).write_text(text + "\n", encoding="utf-8")
    table = "".join(f"      {key}: {value}\n" for key, value in translations.items())
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: t\n"
        f"theme:\n  name: material\n  custom_dir: {os.path.abspath(os.path.join(DOCS, 'overrides'))}\n"
        f"hooks:\n  - {os.path.abspath(os.path.join(DOCS, 'page_languages.py'))}\n"
        "nav:\n  - index.md\n  - Guide:\n      - a.md\n      - a.ko.md\n"
        f"extra:\n  page_languages: [ko]\n  nav_translations:\n    ko:\n{table}",
        encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_nav_translations_cover_the_navigation_and_name_only_what_is_in_it(tmp_path):
    """docs/page_languages.py: a translated navigation on the Korean page, a section or page left
    without a Korean title and a key that names nothing fail the strict build."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e \".[docs]\"")
    full = {"index.md": "홈", "Guide": "안내", "a.md": "쪽 A (영어)"}
    proc = _small_site(tmp_path, full)
    assert proc.returncode == 0, proc.stderr
    ko = (tmp_path / "site" / "a.ko" / "index.html").read_text(encoding="utf-8")
    en = (tmp_path / "site" / "a" / "index.html").read_text(encoding="utf-8")
    assert _nav_titles(ko) == ["홈", "안내", "쪽 A (영어)", "쪽 A"]
    assert _nav_titles(en) == ["Home page", "Guide", "Page A", "쪽 A"]
    proc = _small_site(tmp_path, {k: v for k, v in full.items() if k != "a.md"})
    assert proc.returncode != 0 and "a.ko.md: no ko title for 'a.md'" in proc.stderr, proc.stderr
    proc = _small_site(tmp_path, {**full, "Gone": "없음"})
    assert proc.returncode != 0 and "'Gone' is no section title or page file" in proc.stderr, proc.stderr


def test_site_api_page_shows_literal_defaults(site):
    page = html.unescape(re.sub(r"<[^>]+>", "", _page(site, "api-models")))
    start = re.search(r"pyvae\.VAE\s*¶\s*VAE\(", page).start()  # the class heading's signature
    signature = " ".join(page[start:page.index("**guide_options", start)].split())
    for text in ("VAE( x_dim: int = 784,", "z_dim: int = 50", "hidden: Sequence[int] = (200, 200)"):
        assert text in signature, text
    assert re.search(r"activation: str = [\"']tanh[\"']", signature)
    assert "ModelConfig.z_dim" not in page and "= z_dim" not in page


# ------------------------------------------------------------------------------ docs/cli.md
CLI_DOC = os.path.join(DOCS, "cli.md")
CLI_INTRO = """# The `pyvae` command

`pyvae COMMAND --help` prints the same text. Errors print one line on stderr and exit with
status 2; `--debug` shows the traceback instead. Progress bars (tqdm) are drawn where a
terminal is attached, not in a pipe or a log file, and never with `--no-progress`. The flag
lists below are the commands' own `--help` output, written by
`python tests/test_docs.py --write-cli` (a test checks that every flag of every command appears
here).

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
pyvae evaluate runs/mnist --list            # the run's kept evaluations
```
"""


def _parsers():
    parser = build_parser()
    return parser, dict(parser.commands)


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
        for flag in sub.flags:
            assert flag in section, (f"docs/cli.md: `pyvae {name}` lacks {flag}; "
                                     "run python tests/test_docs.py --write-cli")


# ------------------------------------------------------------------------------ docs/own-model.md
@pytest.mark.slow
def test_own_model_page_runs_and_prints_what_it_shows():
    """Every block of docs/own-model.md runs in order and prints what the page shows (about
    30 s); the split it prints is a split (each gap non-negative within its error)."""
    ns, printed = run_tutorial("own-model.md")
    assert sum(expected is not None for _, expected in printed) >= 4
    for i, (actual, expected) in enumerate(printed):
        if expected is not None:
            assert same_output(actual, expected), (
                f"block {i} printed:\n{actual}\nthe page shows:\n{expected}")
    split = ns["split"]
    assert split["approximation_gap"] >= -4 * split["approximation_gap_stderr"]
    assert split["amortization_gap"] >= -4 * split["amortization_gap_stderr"]
    assert ns["elbo"].mean <= float(ns["exact"].mean()) + 4 * ns["elbo"].mean_stderr


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-cli"]:
        with open(CLI_DOC, "w", encoding="utf-8") as f:
            f.write(cli_markdown())
        print(f"wrote {CLI_DOC}")

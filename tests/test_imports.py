"""The package's imports, read from the source (AST): they point down the layer list, form no
circle, and no function imports a pyvae module (lazy imports of heavy optional libraries such
as matplotlib, torchvision or tensorboard stay where they are)."""
import ast
import os
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyvae")

#: the layers, lowest first; a module may import its own layer and those below it
LAYERS = [
    ("pyvae.errors", "pyvae.limits", "pyvae.devices"),
    ("pyvae.config",),
    ("pyvae.models",),
    ("pyvae.infer",),
    ("pyvae.data",),
    ("pyvae.training",),
    ("pyvae.run",),
    ("pyvae.reports",),
    ("pyvae.cli",),
    ("pyvae", "pyvae.__main__"),
]
#: pairs of layers that never meet, although the list would allow it
FORBIDDEN = {("pyvae.infer", "pyvae.models"): "inference takes any Pyro model and guide",
             ("pyvae.infer", "pyvae.data"): "inference takes tensors"}
#: imports that cross FORBIDDEN, each with its reason: none (refine takes pyvae's flow families
#: from a registry the top level fills)
EXCEPTIONS: Dict[Tuple[str, str], str] = {}


def module_files(root: str = PACKAGE) -> Dict[str, str]:
    """Module name -> file, for every .py file of the package."""
    out = {}
    base = os.path.dirname(root)
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                module = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
                out[module[:-len(".__init__")] if module.endswith(".__init__") else module] = path
    return out


def imports(module: str, path: str, modules: Set[str]) -> List[Tuple[str, int, bool]]:
    """(imported pyvae module, line, inside a function) for each import in ``path``."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # "from . import flags" names a module; "from .flags import Parser" a name in one
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target == "pyvae" or target.startswith("pyvae."):
                found.append((target, node.lineno, id(node) in in_function))
    return found


def layer_of(module: str) -> int:
    best, index = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, index = len(name), i
    assert index is not None, f"{module} is in no layer of LAYERS"
    return index


def group_of(module: str) -> str:
    return next(name for name in LAYERS[layer_of(module)]
                if module == name or module.startswith(name + "."))


def graph(root: str = PACKAGE):
    modules = module_files(root)
    return modules, {m: imports(m, path, set(modules)) for m, path in modules.items()}


def problems(root: str = PACKAGE) -> List[str]:
    """Every import that breaks a rule, one line each."""
    modules, edges = graph(root)
    out = []
    for module, found in sorted(edges.items()):
        for target, line, in_function in found:
            where = f"{os.path.relpath(modules[module], os.path.dirname(root))}:{line}"
            if in_function:
                out.append(f"{where}: {module} imports {target} inside a function")
            if layer_of(target) > layer_of(module):
                out.append(f"{where}: {module} imports {target}, which is above it")
            pair = (group_of(module), group_of(target))
            if pair in FORBIDDEN and (module, target) not in EXCEPTIONS:
                out.append(f"{where}: {module} imports {target} ({FORBIDDEN[pair]})")
    out += [f"import circle: {' -> '.join(c)}" for c in circles(edges)]
    return out


def circles(edges) -> List[List[str]]:
    """The import circles among the modules (one per strongly connected set)."""
    targets = {m: sorted({t for t, _, _ in found if t in edges and t != m})
               for m, found in edges.items()}
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in targets[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(targets):
        if v not in index:
            visit(v)
    return out


def test_imports_point_down_without_circles_or_imports_in_functions():
    assert problems() == []


def test_every_exception_is_still_needed():
    _, edges = graph()
    used = {(m, t) for m, found in edges.items() for t, _, _ in found}
    assert set(EXCEPTIONS) <= used, sorted(set(EXCEPTIONS) - used)


def _package(tmp_path, files: Dict[str, str]) -> str:
    root = tmp_path / "pyvae"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root)


@pytest.mark.parametrize("files, expected", [
    ({"__init__.py": "", "errors.py": "", "config.py": "from .models import vae\n",
      "models/__init__.py": "", "models/vae.py": "from ..errors import ConfigError\n"},
     "pyvae.config imports pyvae.models.vae, which is above it"),
    ({"__init__.py": "", "errors.py": "", "models/__init__.py": "",
      "models/vae.py": "def f():\n    from ..errors import ConfigError\n"},
     "imports pyvae.errors inside a function"),
    ({"__init__.py": "", "models/__init__.py": "", "models/a.py": "from .b import x\n",
      "models/b.py": "from . import a\n"},
     "import circle: pyvae.models.a -> pyvae.models.b -> pyvae.models.a"),
    ({"__init__.py": "", "models/__init__.py": "", "models/vae.py": "",
      "infer/__init__.py": "", "infer/weights.py": "from ..models.vae import VAE\n"},
     "inference takes any Pyro model and guide"),
    ({"__init__.py": "", "models/__init__.py": "", "models/guides.py": "",
      "infer/__init__.py": "", "infer/refine.py": "from ..models.guides import GUIDES\n"},
     "pyvae.infer.refine imports pyvae.models.guides (inference takes any Pyro model and guide)"),
])
def test_the_checks_see_each_kind_of_bad_import(tmp_path, files, expected):
    found = problems(_package(tmp_path, files))
    assert any(expected in line for line in found), found


def test_lazy_imports_of_optional_libraries_are_not_flagged(tmp_path):
    root = _package(tmp_path, {"__init__.py": "", "reports/__init__.py": "",
                               "reports/plots.py": "def f():\n    import matplotlib\n"})
    assert problems(root) == []

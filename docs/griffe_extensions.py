"""A griffe extension for the API reference: defaults shown as the values they are.

pyvae keeps each default in one place, a field of a config dataclass, and signatures name it
(``z_dim: int = ModelConfig.z_dim``; the field itself reads ``option(50, "latent size", ...)``).
Read statically, such a default is only an expression, and the API page would show a name where
a reader wants 50. Once the package is loaded, this extension replaces

- a parameter default that is a name or an attribute (``ModelConfig.z_dim``, ``DEFAULT_GUIDES``),
  looked up by the path griffe resolves it to (``pyvae.config.ModelConfig.z_dim``): the module
  that defines it is imported, not the function's own (which may need an optional library), and
- the default of a dataclass field (its attribute value and its ``__init__`` parameter), read
  from ``dataclasses.fields`` of the class,

by the ``repr`` of the value, when that value is a plain literal (numbers, strings, booleans,
None, and tuples or lists of them). Anything else keeps its source text.

A second extension, ``InheritedArgs``, gives a class that inherits its ``__init__`` (the flow
families, which take ``Flow``'s) the ``Args:`` entries of the class that defines it: the page
shows the inherited signature (``merge_init_into_class``), and the meaning of its parameters
is written once, where they are.

Used by mkdocs.yml (``extensions:`` of the mkdocstrings python handler) and by
tests/test_docs.py, which checks the rendered signatures and that every parameter shown has an
``Args:`` entry.
"""
import dataclasses
import importlib

import griffe


def is_literal(value) -> bool:
    """Whether ``repr(value)`` is the Python literal of ``value``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (tuple, list)) and all(is_literal(v) for v in value)


def resolve(path: str):
    """The object at a dotted path such as ``pyvae.config.ModelConfig.z_dim``: the longest
    importable module prefix, then attributes. Raises LookupError when there is none."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                value = getattr(value, name)
        except AttributeError:
            break
        return value
    raise LookupError(path)


def _objects(obj):
    """The functions and classes defined in ``obj`` (a module or class), recursively."""
    for member in obj.members.values():
        if member.is_alias:
            continue
        if member.is_function:
            yield member
        elif member.is_class or member.is_module:
            if member.is_class:
                yield member
            yield from _objects(member)


def _field_defaults(cls) -> dict:
    """{field name: default} of a runtime dataclass (fields with a plain default only)."""
    try:
        runtime = resolve(cls.path)
    except LookupError:  # not importable as written (e.g. defined inside a function)
        return {}
    if not (isinstance(runtime, type) and dataclasses.is_dataclass(runtime)):
        return {}
    return {f.name: f.default for f in dataclasses.fields(runtime)
            if f.default is not dataclasses.MISSING and is_literal(f.default)}


class LiteralDefaults(griffe.Extension):
    """Replace defaults such as ``ModelConfig.z_dim`` or ``option(50, ...)`` by ``50``."""

    def on_package(self, *, pkg, **kwargs) -> None:
        for obj in _objects(pkg):
            if obj.is_function:
                for parameter in obj.parameters:
                    if isinstance(parameter.default, (griffe.ExprName, griffe.ExprAttribute)):
                        try:  # a name or a dotted attribute, nothing else
                            value = resolve(parameter.default.canonical_path)
                        except LookupError:  # not found at import time: keep the text
                            continue
                        if is_literal(value):
                            parameter.default = repr(value)
            else:
                defaults = _field_defaults(obj)
                init = obj.members.get("__init__")
                for name, value in defaults.items():
                    attribute = obj.members.get(name)
                    if attribute is not None and not attribute.is_alias and attribute.is_attribute:
                        attribute.value = repr(value)
                    if init is not None and not init.is_alias and name in init.parameters:
                        init.parameters[name].default = repr(value)


def _args(docstring) -> dict:
    """{name: description} of the Args section(s) of a griffe docstring (None: {})."""
    if docstring is None:
        return {}
    sections = docstring.parse("google", warn_missing_types=False, warnings=False)
    return {p.name: p.description for section in sections if section.kind.value == "parameters"
            for p in section.value}


class InheritedArgs(griffe.Extension):
    """Append to the docstring of a class without its own ``__init__`` the ``Args:`` entries,
    from the nearest base class that defines ``__init__``, of the parameters it does not
    document itself."""

    def on_package(self, *, pkg, **kwargs) -> None:
        for cls in _objects(pkg):
            if not cls.is_class or cls.docstring is None or "__init__" in cls.members:
                continue
            try:
                bases = cls.mro()
            except Exception:  # a base outside the package: nothing to copy from
                continue
            owner = next((b for b in bases if "__init__" in b.members), None)
            if owner is None or owner.members["__init__"].is_alias:
                continue
            if not owner.path.startswith(pkg.path + "."):
                continue
            documented = {**_args(owner.members["__init__"].docstring), **_args(owner.docstring)}
            own = _args(cls.docstring)
            lines = []
            for parameter in owner.members["__init__"].parameters:
                name = {"var_positional": "*", "var_keyword": "**"}.get(
                    parameter.kind.name, "") + parameter.name
                if parameter.name in ("self", "cls") or name in own or name not in documented:
                    continue
                text = documented[name].splitlines() or [""]
                lines.append(f"    {name}: {text[0]}")
                lines += [f"        {line}" if line else "" for line in text[1:]]
            if lines:
                cls.docstring.value = cls.docstring.value.rstrip() + "\n\nArgs:\n" + "\n".join(lines)

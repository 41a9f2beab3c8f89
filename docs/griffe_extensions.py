"""A griffe extension for the API reference: defaults shown as the values they are.

pyvae keeps each default in one place, a field of a config dataclass, and signatures name it
(``z_dim: int = ModelConfig.z_dim``; the field itself reads ``option(50, "latent size", ...)``).
Read statically, such a default is only an expression, and the API page would show a name where
a reader wants 50. Once the package is loaded, this extension replaces

- a parameter default that is a name or an attribute (``ModelConfig.z_dim``, ``DEFAULT_GUIDES``),
  evaluated in the namespace of the function's module, and
- the default of a dataclass field (its attribute value and its ``__init__`` parameter), read
  from ``dataclasses.fields`` of the class,

by the ``repr`` of the value, when that value is a plain literal (numbers, strings, booleans,
None, and tuples or lists of them). Anything else keeps its source text.

Used by mkdocs.yml (``extensions:`` of the mkdocstrings python handler) and by
tests/test_docs.py, which checks the rendered signatures.
"""
import dataclasses
import importlib

import griffe


def is_literal(value) -> bool:
    """Whether ``repr(value)`` is the Python literal of ``value``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (tuple, list)) and all(is_literal(v) for v in value)


def _module(obj):
    return vars(importlib.import_module(obj.module.path))


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
        runtime = eval(cls.path[len(cls.module.path) + 1:], _module(cls))
    except Exception:  # not importable as written (e.g. defined inside a function)
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
                namespace = _module(obj)
                for parameter in obj.parameters:
                    if isinstance(parameter.default, (griffe.ExprName, griffe.ExprAttribute)):
                        try:  # a name or a dotted attribute, nothing else
                            value = eval(str(parameter.default), namespace)
                        except Exception:  # not defined at import time: keep the text
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

"""How an option is declared, defaulted and checked, once: a dataclass field made by ``option``.

An option's default, its check, its help text and its command-line flag are one field of a small
dataclass that lives beside what it configures: each guide family's ``Options`` in
``pyvae.models.guides``, ``ModelConfig`` in ``pyvae.models.config``, ``TrainConfig``,
``DataConfig`` and ``RunConfig`` in ``pyvae.training.config`` (``pyvae.config.ModelConfig`` and
the others name the same classes). A run directory's config.json is::

    {"vae": ModelConfig.to_dict(), "trainer": TrainConfig.to_dict(), "data": DataConfig.to_dict()}

The checks run when a config is built (``Config.__post_init__``); a bad value raises
``ConfigError`` with one line for the user. Code that takes a built config trusts it. The
``pyvae`` command line builds its flags from the fields (``flag_fields``). A name chosen from a
registry is checked by ``one_of(REGISTRY)``, the one place that says "choose one of".

This module imports no other part of pyvae but ``errors`` and ``limits``, so every layer may
use it.
"""
import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Callable, Iterable, List, Optional, Tuple, Union

from .errors import ConfigError
from .limits import check_at_most, check_seed


# --------------------------------------------------------------------------- checks and parsers
def positive_int(value, name: str) -> int:
    """An integer >= 1 ("z_dim must be positive, got 0").

    Args:
        value: the value to check.
        name: how the message calls the option.

    Returns:
        ``value`` as an int.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return int(value)


def at_least_one(value, name: str) -> int:
    """An integer >= 1 ("flow_length must be >= 1, got 0").

    Args:
        value: the value to check.
        name: how the message calls the option.

    Returns:
        ``value`` as an int.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value \
            or value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value!r} (a count must be positive)")
    return int(value)


def nonnegative_int(value, name: str) -> int:
    """An integer >= 0 ("epochs must be >= 0, got -1").

    Args:
        value: the value to check.
        name: how the message calls the option.

    Returns:
        ``value`` as an int.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def positive_float(value, name: str) -> float:
    """A finite number > 0 ("learning rate must be a positive number, got 0").

    Args:
        value: the value to check.
        name: how the message calls the option.

    Returns:
        ``value`` as a float.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value}")
    return float(value)


def nonnegative_float(value, name: str) -> float:
    """A finite number >= 0 ("beta must be a number >= 0, got -1").

    Args:
        value: the value to check.
        name: how the message calls the option.

    Returns:
        ``value`` as a float.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a number >= 0, got {value}")
    return float(value)


def unit_interval(value, name: str) -> float:
    """A number in [0, 1] ("the ciwae beta must lie in [0, 1], got 2").

    Args:
        value: the value to check.
        name: how the message calls the option.

    Returns:
        ``value`` as a float.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def valid_seed(value, name: str = "seed") -> int:
    """A seed Pyro and NumPy accept (``pyvae.limits.check_seed``).

    Args:
        value: the value to check: an integer in ``pyvae.limits``' seed range.
        name: how a message would call the option (the message says "seed").

    Returns:
        ``value`` as an int.
    """
    return check_seed(value)


def parse_int_list(text: str) -> List[int]:
    """Comma-separated integers as the command line gives them ("200,200" -> [200, 200]).

    Args:
        text: the flag's text; empty items are skipped ("" -> []).
    """
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {text!r}") from None


def int_list(value, name: str, noun: Optional[str] = "layer sizes") -> Tuple[int, ...]:
    """Sizes such as hidden layers: a sequence of positive integers (the command line parses
    "200,200" first, ``parse_int_list``). A non-positive entry is "NAME: NOUN must be positive"
    ("NAME must be positive" without a noun).

    Args:
        value: a sequence of integers (not a string).
        name: how the message calls the option.
        noun: what the entries are, in the message (None: none).

    Returns:
        the sizes as a tuple of ints.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) or not all(
            hasattr(v, "__index__") and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{name} must be a sequence of integers such as (200, 200), got {value!r}")
    sizes = tuple(int(v) for v in value)
    if any(s <= 0 for s in sizes):
        what = f"{name}: {noun}" if noun else name
        raise ConfigError(f"{what} must be positive, got {list(sizes)}")
    return sizes


def at_most(check: Callable, limit_name: str) -> Callable:
    """``check``, then the sane upper bound ``pyvae.limits.MAX[limit_name]`` (on each entry of a
    list of sizes).

    Args:
        check: the check to run first, ``check(value, name) -> value``.
        limit_name: the key of ``pyvae.limits.MAX`` that bounds the value (each entry of a
            tuple).

    Returns:
        the combined check, ``bounded(value, name) -> value`` (with ``check``'s ``parse``).
    """
    def bounded(value, name):
        value = check(value, name)
        for v in (value if isinstance(value, tuple) else (value,)):
            check_at_most(limit_name, v)
        return value
    bounded.parse = getattr(check, "parse", None)
    return bounded


int_list.parse = parse_int_list


def choose(value, choices: Iterable[str], name: str):
    """``value`` if it is one of ``choices``, else the one error: "unknown NAME 'x'; choose one
    of: a, b, c" (the choices in their registry's order).

    Args:
        value: the name given.
        choices: the valid names, in the order the message lists them.
        name: what the message calls the option ("guide", "prior", ...).
    """
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
    return value


def one_of(registry: Union[dict, tuple], names_only: bool = False):
    """A check that a name is a key of ``registry`` (a dict of components, or a tuple of names);
    other values pass (component objects) unless ``names_only``. ``check.choices()`` lists the
    names, as the registry holds them when asked (so a family registered later is one).

    Args:
        registry: the components by name (a dict) or the names (a tuple), read at each check.
        names_only: refuse any value that is not one of the names (no objects).

    Returns:
        the check, ``check(value, name) -> value``, with ``check.choices()``.
    """
    def check(value, name):
        if isinstance(value, str) or names_only:
            choose(value, list(registry), name)
        return value
    check.choices = lambda: list(registry)
    return check


def option(default=None, help: str = "", check=None, name: Optional[str] = None,
           flag: Optional[str] = None, cli: bool = True, metavar: Optional[str] = None,
           choices: bool = False, bare=None, example=None):
    """A dataclass field with its check (``check(value, name) -> value``) and its CLI flag.

    Args:
        default: the option's default value (a literal; the API pages show it as the field's
            default).
        help: one line for ``--help``: what the option is.
        check: ``check(value, name) -> value``, run when the config is built (None: none; a
            None value is never checked).
        name: how messages call the option (None: the field name).
        flag: the command-line flag (None: ``--field-name``).
        cli: whether the option is a command-line flag at all.
        metavar: the flag's placeholder in ``--help`` (None: argparse's).
        choices: have argparse refuse a value outside the check's registry (for fixed lists;
            names from open registries are checked when the config is built).
        bare: the value the flag means when given without one (None: the flag needs a value).
        example: a valid value other than the default (the tests give it to the flag and look
            for it where the option is used).

    Returns:
        a ``dataclasses.field`` whose metadata holds all but the default.
    """
    return field(default=default, metadata=dict(help=help, check=check, name=name, flag=flag,
                                                cli=cli, metavar=metavar, choices=choices,
                                                bare=bare, example=example))


def _check_fields(obj) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        check = f.metadata.get("check")
        if check is not None and value is not None:
            object.__setattr__(obj, f.name, check(value, f.metadata.get("name") or f.name))


class Config:
    """Shared behaviour: checks run on construction; ``to_dict``/``from_dict`` as JSON."""

    def __post_init__(self):
        _check_fields(self)

    def to_dict(self) -> dict:
        """{field: value} as JSON values (tuples as lists, nested configs as dicts)."""
        return {f.name: jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Optional[dict]):
        """The config from a dict that may lack options added since it was written.

        Args:
            d: {field: value} as ``to_dict`` writes it (None: {}); a key that is no field
                raises ``ConfigError``, a missing one takes the default.
        """
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} option {', '.join(unknown)}; "
                              f"options are: {', '.join(sorted(names))}")
        return cls(**d)

    def replace(self, **changes):
        """A copy with some fields changed, checked again (``dataclasses.replace``).

        Args:
            **changes: {field: new value}.
        """
        return dataclasses.replace(self, **changes)


_Config = Config  # (the name it had)


def jsonable(value):
    """``value`` as JSON holds it: tuples become lists and configs their ``to_dict()``.

    Args:
        value: a field's value.
    """
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Config):
        return value.to_dict()
    return value


@dataclass
class NoOptions(Config):
    """The options of a component that takes none of its own (the diagonal guide, ...)."""


def flag_fields(cls) -> List[dataclasses.Field]:
    """The fields of a config dataclass that are command-line flags.

    Args:
        cls: a config dataclass (or an instance).

    Returns:
        its ``dataclasses.Field`` objects with ``cli`` true, in declaration order.
    """
    return [f for f in fields(cls) if f.metadata.get("cli", True)]

"""Flags of the ``pyvae`` command, generated from the config dataclasses (``ModelConfig``, each
guide family's ``Options`` in ``GUIDES``, ``TrainConfig``, ``DataConfig``): each field gives a
flag's type, check, help and default, so a default and its check live in one place; plus the
runtime flags (device, threads, data location, progress, tracebacks). The guide flags are read
from the registry when a parser is built: a family registered in ``GUIDES`` brings its own."""
import argparse
import typing
from typing import List

from ..config import flag_fields, int_list, parse_int_list
from ..errors import ConfigError
from ..limits import check_seed
from ..models.config import ModelConfig
from ..models.guides import guide_option_fields
from ..training.config import DataConfig, TrainConfig


class Parser(argparse.ArgumentParser):
    """argparse, with errors on one line: ``pyvae train: error: ...`` and exit status 2; and
    ``flags``, the option strings of every argument added (docs/cli.md is checked against them)."""

    def add_argument(self, *names, **kwargs):
        action = super().add_argument(*names, **kwargs)
        # argparse's own __init__ adds --help through here, before any attribute of ours exists
        self.flags = getattr(self, "flags", []) + list(action.option_strings)
        self.arguments = getattr(self, "arguments", []) + [action]
        return action

    def given(self, argv) -> set:
        """The ``dest`` of every argument ``argv`` gives, told apart from those left at their
        defaults (``--split test`` is given; no ``--split`` is not): ``argv`` parsed again with
        the defaults of this parser and of its ``commands`` suppressed. ``pyvae.cli.main`` keeps
        it as ``args.given``, which ``refuse_given`` reads.

        Args:
            argv: the command line's arguments, already parsed once without error.
        """
        parsers = [self, *getattr(self, "commands", {}).values()]
        saved = [(a, a.default) for p in parsers for a in getattr(p, "arguments", [])]
        try:
            for action, _ in saved:
                action.default = argparse.SUPPRESS
            parsed = self.parse_args(argv)
        finally:
            for action, default in saved:
                action.default = default
        return set(vars(parsed)) - {"command", "func"}

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def int_list_type(text: str):
    try:
        return list(int_list(parse_int_list(text), "every value", noun=None))  # counts: k, AIS steps
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def seed_type(text: str) -> int:
    try:
        return check_seed(int(text))
    except (ValueError, ConfigError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _flag_type(f):
    """argparse's ``type=`` for a config field: parse the text, then run the field's check, so
    that a bad number is refused with the same message as in Python before anything runs.
    Names chosen from a registry are checked when the config is built (``--debug`` then shows
    the traceback); their help lists the registry."""
    check = f.metadata.get("check")
    kind = f.type
    if typing.get_origin(kind) is typing.Union:  # Optional[X] -> X
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if getattr(check, "parse", None) is not None:  # text such as "200,200"
        parse = check.parse
    elif kind is bool:
        return None
    elif kind in (int, float):
        parse = kind
    else:
        return str
    if check is None or hasattr(check, "choices"):
        return parse

    def convert(text):
        try:
            value = parse(text)  # a ValueError here reads "invalid int value: 'x'"
            value = check(value, f.metadata.get("name") or f.name)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return list(value) if isinstance(value, tuple) else value

    convert.__name__ = parse.__name__
    return convert


def _help(f) -> str:
    text = f.metadata.get("help", "")
    check = f.metadata.get("check")
    if hasattr(check, "choices"):
        text += "; one of: " + ", ".join(check.choices())
    if f.default is not None and f.default is not False:
        default = f.default
        text += " (default " + (",".join(map(str, default)) if isinstance(default, tuple)
                                else str(default)) + ")"
    return text.replace("%", "%%")


def add_config_flags(parser, config_fields) -> List[str]:
    """One flag per config field, its type, check and help from the field. The default stays
    None, so that a command can tell the flags given from those left out (``--resume`` needs
    that); the field's own default applies when the dataclass is built."""
    dests = []
    for f in config_fields:
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        kwargs = dict(dest=f.name, default=None, help=_help(f))
        if f.metadata.get("metavar"):
            kwargs["metavar"] = f.metadata["metavar"]
        kind = _flag_type(f)
        if f.metadata.get("choices"):
            kwargs["choices"] = list(f.metadata["check"].choices())
        if kind is None:
            kwargs.update(action="store_true")
        else:
            kwargs["type"] = kind
        if f.metadata.get("bare") is not None:
            kwargs.update(nargs="?", const=f.metadata["bare"])
        parser.add_argument(flag, **kwargs)
        dests.append(f.name)
    return dests


MODEL_FLAGS = flag_fields(ModelConfig)
TRAIN_FLAGS = [f for f in flag_fields(TrainConfig) if f.name != "epochs"]
DATA_FLAGS = flag_fields(DataConfig)
SNR_FLAGS = [f for f in TRAIN_FLAGS if f.name in ("groups", "ciwae_beta")]


def guide_flags():
    """One flag per option of the families in ``GUIDES`` now (a family registered after import
    brings its options)."""
    return list(guide_option_fields().values())


def given_flags(args, config_fields) -> dict:
    """The flags of ``config_fields`` given on the command line."""
    out = {}
    for f in config_fields:
        value = getattr(args, f.name, None)
        if value is not None and value is not False:
            out[f.name] = value
    return out


def refuse_given(args, allowed, why: str) -> None:
    """One ConfigError line naming the flags given on the command line (``args.given``) that
    are not ``allowed``: "--seed, --split do not apply WHY".

    Args:
        args: the parsed command line, with ``given``.
        allowed: the dests that may be given (``--debug`` always may).
        why: the end of the line, e.g. "with --list (...)".
    """
    extra = sorted(set(getattr(args, "given", ())) - set(allowed) - {"debug"})
    if extra:
        names = ", ".join("--" + d.replace("_", "-") for d in extra)
        raise ConfigError(f"{names} {'does' if len(extra) == 1 else 'do'} not apply {why}")


def progress_of(args):
    """The ``progress`` a command passes down: False with --no-progress, else None, tqdm's own
    rule (``disable=None``): bars where a terminal is attached, none in a pipe or a log file.

    Args:
        args: the parsed command line, with ``no_progress``.
    """
    return False if args.no_progress else None


def add_runtime_flags(parser, *names: str) -> None:
    """Flags about where and how a command runs, the same for every command that takes them."""
    flags = {
        "device": dict(default="cpu", help="cpu (default), cuda, cuda:N"),
        "threads": dict(type=positive_int, default=None, help="torch CPU threads"),
        "data-dir": dict(default=None, help="where the dataset lives (default $PYVAE_DATA or "
                                            "~/.cache/pyvae-data)"),
        "no-download": dict(action="store_true", help="never download the dataset"),
        "no-progress": dict(action="store_true", help="no progress bars (by default they are drawn "
                                                      "where a terminal is attached)"),
        "debug": dict(action="store_true", default=argparse.SUPPRESS, help="show tracebacks"),
    }
    for name in names:
        parser.add_argument("--" + name, **flags[name])

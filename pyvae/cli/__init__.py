"""The ``pyvae`` command line: ``pyvae train``, ``pyvae evaluate``, ...; one module per command
(``pyvae.cli.train``, ...), each adding its parser and running it, with the flags of
``pyvae.cli.flags``.

Bad input prints one line on stderr and exits with status 2 (``--debug`` shows the traceback).
"""
import signal
import sys

from ..errors import ConfigError, TrainingDiverged, TrainingInterrupted, interrupted_while_starting
from . import bdmc, compare, evaluate, plot, snr, train
from .flags import Parser

#: the commands in the order ``pyvae --help`` lists them: name -> module
COMMANDS = {"train": train, "plot": plot, "compare": compare, "evaluate": evaluate, "snr": snr,
            "bdmc": bdmc}


def build_parser() -> Parser:
    """The ``pyvae`` parser; its ``commands`` are the commands' parsers by name (their ``flags``
    list the flags docs/cli.md shows)."""
    parser = Parser(prog="pyvae", description="Variational autoencoders in Pyro: train, evaluate, compare.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    parser.commands = {}
    for name, module in COMMANDS.items():
        module.add_parser(sub)
        parser.commands[name] = sub.choices[name]
    return parser


def main(argv=None) -> int:
    if signal.getsignal(signal.SIGINT) is interrupted_while_starting:  # started: Python's again
        signal.signal(signal.SIGINT, signal.default_int_handler)
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = parser.given(argv)  # the flags given, not left at their defaults
    debug = args.debug
    try:
        return args.func(args)
    except ConfigError as e:
        if debug:
            raise
        print(f"pyvae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"pyvae {args.command}: {e}", file=sys.stderr)
        return 128 + e.signum
    except TrainingDiverged as e:
        if debug:
            raise
        print(f"pyvae {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before training (or evaluation) took over the signal
        if debug:
            raise
        print(f"pyvae {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permissions, a path under a file, ...
        if debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"pyvae {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2

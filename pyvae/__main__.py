import sys

try:  # Ctrl-C while torch and pyro are still being imported: one line, not a traceback
    from .cli import main
except KeyboardInterrupt:
    print("pyvae: interrupted", file=sys.stderr)
    raise SystemExit(130)

raise SystemExit(main())

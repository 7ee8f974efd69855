"""ktapctl: the ktap client (command line, session client, compile cache, renderers) and, in
ktapctl/lang, the compiler.

Kept empty of imports so that ``ktapctl -V`` loads nothing it does not
need; this package must not import ktapd (the embedded daemon is the one
exception, started from ktapctl/client.py through ktapd.embedded).
"""

__version__ = "0.5.0"  # the same as pyproject.toml (tests/ctl checks)

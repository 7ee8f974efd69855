"""ktapd's configuration: defaults, and the TOML file that overrides them.

The file is /etc/ktapd/ktapd.toml (``--config`` names another).  A missing
default file is fine (defaults apply); a named file that is missing, an
unknown key or a value of the wrong type is an error at start-up, so a typo
never silently weakens the policy.  Example with every key and its default::

    socket = "/run/ktapd/ktapd.sock"   # ignored under systemd socket activation
    socket_mode = 0o666                # who may connect; the policy decides what they may do
    admin_groups = []                  # members (and uid 0) are administrators
    user_event_kinds = []              # event kinds ordinary users may trace ("tracepoint", "uprobe", ...)
    output_buffer_bytes = 16777216     # per session, while detached or behind a slow client
    max_sessions_per_user = 16         # running or uncollected sessions of one non-admin user
    worker_user = ""                   # "" = "ktapd-worker" if that user exists, else "nobody"
    spare_worker = true                # keep one worker started ahead of need (faster session start)
    worker_memory_bytes = 2147483648   # address-space cap of each session worker (0: none)

    [limits]                           # RuntimeLimits defaults for every session
    string_bytes = 511
    handler_steps = 100000

This module must not start anything: it only reads and checks.
"""

from __future__ import annotations

import dataclasses
import pwd
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from protocol.limits import RuntimeLimits

DEFAULT_CONFIG_PATH = Path("/etc/ktapd/ktapd.toml")
DEFAULT_SOCKET_PATH = Path("/run/ktapd/ktapd.sock")


class ConfigError(ValueError):
    """The configuration file cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class Config:
    socket: Path = DEFAULT_SOCKET_PATH
    # Anyone may connect by default: identity comes from SO_PEERCRED and
    # the policy decides per request, so the socket mode is not the gate.
    socket_mode: int = 0o666
    admin_groups: tuple[str, ...] = ()
    user_event_kinds: tuple[str, ...] = ()
    output_buffer_bytes: int = 16 * 1024 * 1024
    max_sessions_per_user: int = 16
    worker_user: str = ""
    spare_worker: bool = True
    # Step budgets bound time, not memory: a script may fill many tables.
    worker_memory_bytes: int = 2 * 1024 * 1024 * 1024
    limits: RuntimeLimits = field(default_factory=RuntimeLimits)

    def worker_account(self) -> tuple[int, int, str]:
        """(uid, gid, name) the session workers run as."""
        names = [self.worker_user] if self.worker_user else ["ktapd-worker", "nobody"]
        for name in names:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return entry.pw_uid, entry.pw_gid, name
        raise ConfigError(f"worker user {' or '.join(names)!r} does not exist")


# key -> (type check, converter); one row per key of the file.
_KEYS = {
    "socket": (str, Path),
    "socket_mode": (int, int),
    "admin_groups": (list, tuple),
    "user_event_kinds": (list, tuple),
    "output_buffer_bytes": (int, int),
    "max_sessions_per_user": (int, int),
    "worker_user": (str, str),
    "spare_worker": (bool, bool),
    "worker_memory_bytes": (int, int),
}
_LIMIT_FIELDS = {f.name for f in dataclasses.fields(RuntimeLimits)}


def load(path: Path | None = None) -> Config:
    """Read ``path`` (or the default file if it exists) over the defaults."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return Config()
        path = DEFAULT_CONFIG_PATH
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return from_dict(doc, str(path))


def from_dict(doc: dict, where: str = "configuration") -> Config:
    values: dict = {}
    for key, value in doc.items():
        if key == "limits":
            values["limits"] = _limits(value, where)
            continue
        if key not in _KEYS:
            raise ConfigError(
                f"{where}: unknown key {key!r} (known: {', '.join(sorted([*_KEYS, 'limits']))})"
            )
        kind, convert = _KEYS[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"{where}: {key} has the wrong type ({type(value).__name__})")
        if kind is list and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key} must be a list of strings")
        values[key] = convert(value)
    if values.get("output_buffer_bytes", 1) < 1:
        raise ConfigError(f"{where}: output_buffer_bytes must be at least 1")
    return Config(**values)


def _limits(table: object, where: str) -> RuntimeLimits:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [limits] must be a table")
    for name, value in table.items():
        if name not in _LIMIT_FIELDS:
            raise ConfigError(
                f"{where}: unknown limit {name!r} (known: {', '.join(sorted(_LIMIT_FIELDS))})"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: limit {name} must be a positive integer")
    return RuntimeLimits(**table)

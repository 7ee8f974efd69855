"""The two pieces of systemd's protocol ktapd uses, without libsystemd.

- Socket activation (sd_listen_fds(3)): with ``LISTEN_PID`` equal to our
  pid and ``LISTEN_FDS`` >= 1, the listening socket is fd 3.
- Readiness (sd_notify(3)): datagrams such as ``READY=1`` and
  ``STOPPING=1`` to the Unix socket named by ``NOTIFY_SOCKET`` (a leading
  ``@`` means the abstract namespace).

Outside systemd both are no-ops.  This module must not do anything else.
"""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


def listen_fds(unset_environment: bool = True) -> list[int]:
    """File descriptors passed by socket activation (empty when not activated)."""
    try:
        pid = int(os.environ.get("LISTEN_PID", ""))
        count = int(os.environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    finally:
        if unset_environment:
            # Children (workers) must not think the sockets are theirs.
            for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                os.environ.pop(name, None)
    if pid != os.getpid() or count < 1:
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))


def notify(state: str) -> bool:
    """Send ``state`` to the service manager; False when there is none."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True

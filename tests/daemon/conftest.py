"""Fixtures for daemon tests: a real Daemon on a Unix socket in a temporary directory."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from daemon_helpers import RawClient

from ktapd.config import Config
from ktapd.server import Daemon, bind_socket


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "config(**kwargs): the Config the ktapd fixture's daemon uses"
    )


class Running:
    def __init__(self, daemon: Daemon, path: str) -> None:
        self.daemon = daemon
        self.path = path

    async def client(self, greet: bool = True) -> RawClient:
        return await RawClient.connect(self.path, greet)


@pytest.fixture
async def ktapd(nursery, request):
    marker = request.node.get_closest_marker("config")
    config = Config(**(marker.kwargs if marker else {}))
    directory = tempfile.mkdtemp(prefix="ktapd-test-")
    os.chmod(directory, 0o755)  # other users connect in the policy tests
    path = os.path.join(directory, "d.sock")
    listener = bind_socket(path, 0o666)
    daemon = Daemon(config)
    await nursery.start(daemon.serve, listener)
    yield Running(daemon, path)
    listener.close()
    shutil.rmtree(directory, ignore_errors=True)

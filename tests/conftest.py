"""Shared fixtures for every test folder; helpers live in kernel_support.py."""

from __future__ import annotations

import pytest
from kernel_support import kernel_unavailable_reason, require_kernel

__all__ = ["kernel_unavailable_reason", "require_kernel"]


@pytest.fixture
def kernel() -> None:
    """Use in a kernel test: skips (fails in CI) when the kernel paths are unavailable."""
    reason = kernel_unavailable_reason()
    if reason:
        require_kernel(reason)

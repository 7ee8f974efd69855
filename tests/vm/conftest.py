"""Helpers for VM tests, and every VM test run twice: with the inline
templates and with the one-line (compact) forms used for huge functions."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from ktapd.vm import compact  # noqa: E402


@pytest.fixture(autouse=True, params=["inline", "compact"], scope="module")
def translation_mode(request):
    saved = compact.COMPACT_THRESHOLD
    compact.COMPACT_THRESHOLD = saved if request.param == "inline" else -1
    yield request.param
    compact.COMPACT_THRESHOLD = saved

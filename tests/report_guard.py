"""A pytest plugin: failure reports are rendered with the garbage collector paused.

On CPython 3.11, rendering a failure parses source files with `ast`. If a
collection runs in the middle of that parse and finalizes an object whose
``__del__`` raises, the unraisable-exception hook formats that traceback, which
parses again, re-entrantly; the interpreter's shared AST recursion counter is
then left wrong and the outer parse fails with "SystemError: AST constructor
recursion depth mismatch". pytest turns that into an INTERNALERROR that ends the
whole session and hides the test that failed. Pausing collection while a report
is made keeps the failure readable (objects are collected right after).
"""

from __future__ import annotations

import gc
from collections.abc import Generator

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    """Make the report with the collector paused, then restore it as it was."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return (yield)
    finally:
        if was_enabled:
            gc.enable()

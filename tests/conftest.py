"""Shared test setup: MindSpore on CPU, every component registered, and execution-mode fixtures."""
import os

os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402
import pytest  # noqa: E402

import mindformers  # noqa: E402,F401  (imports every component so the registry is full)

ms.set_device("CPU")


def _mode(mode):
    previous = ms.get_context("mode")
    ms.set_context(mode=mode)
    yield
    ms.set_context(mode=previous)


@pytest.fixture(scope="module")
def graph_mode():
    """Run a test module in GRAPH_MODE (what training uses)."""
    yield from _mode(ms.GRAPH_MODE)


@pytest.fixture(scope="module")
def pynative_mode():
    """Run a test module in PYNATIVE_MODE (op by op, for layer-level checks)."""
    yield from _mode(ms.PYNATIVE_MODE)

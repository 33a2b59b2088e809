"""Shared test setup: MindSpore on CPU, components registered."""
import os

os.environ.setdefault("GLOG_v", "3")

import mindformers  # noqa: E402,F401  (imports every component so the registry is full)

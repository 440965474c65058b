"""Test-session settings: exported graphs and engines go to a private cache, never ~/.cache."""

import os
import tempfile


def pytest_configure(config):
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="rescore-test-cache-")

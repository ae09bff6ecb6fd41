"""Test-wide settings: pyvisa-py as the VISA library, Qt without a screen."""

import atexit
import os
import shutil
import tempfile

import pytest

# The drivers' tests connect to simulated instruments on loopback through pyvisa-py; without
# this pyvisa first searches the system for a vendor VISA library on every connection.
os.environ.setdefault("PYVISA_LIBRARY", "@py")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# The user's cache and state directories are never touched by a test run: each session gets its
# own (subprocesses inherit them through the environment).
_session_home = tempfile.mkdtemp(prefix="hotspin-tests-")
atexit.register(shutil.rmtree, _session_home, ignore_errors=True)
os.environ["HOTSPIN_CACHE_DIR"] = os.path.join(_session_home, "cache")
os.environ["HOTSPIN_STATE_DIR"] = os.path.join(_session_home, "state")


@pytest.fixture(autouse=True)
def lab_state(tmp_path, monkeypatch):
    """A state directory of each test's own: the embedded lab starts new (cold) in every test."""
    directory = tmp_path / "lab-state"
    monkeypatch.setenv("HOTSPIN_STATE_DIR", str(directory))
    return directory

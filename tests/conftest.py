"""Test-wide settings: pyvisa-py as the VISA library, Qt without a screen, one BLAS thread."""

import atexit
import os
import shutil
import tempfile

# One BLAS thread per test process: `make test` runs one pytest-xdist worker per core, so
# OpenBLAS's own threads (one per core in every worker, and in every child a test starts) only
# oversubscribe the cores. The simulator's products (35 × 50 by 50 × 244 140 for a 2 s record
# behind the detection chain) took 1.5 × the user CPU time with two threads as with one (1.2 ×
# with the system's), and longer wall time on this shared machine. Children inherit the
# environment; this process, whose numpy a plugin may have loaded already, is limited through
# threadpoolctl as well.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import pytest  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

threadpool_limits(limits=1)

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


# The slowest modules, slowest first (their time in `make test`, measured with --durations:
# each takes 9-60 s, the other modules a few seconds each). `make test` hands whole modules to
# the workers in the order collected (--dist loadscope --no-loadscope-reorder), so starting with
# the longest leaves only short ones for the end, and the workers finish at about the same time
# (xdist's own order, by number of tests, left a long module with few tests to run last, alone).
# Only an order: a module missing here runs after these, and every module still runs.
SLOWEST_MODULES = (
    "test_run_cli.py",
    "test_faults.py",
    "test_sigkill.py",
    "test_procedures.py",
    "test_flicker.py",
    "test_continuous_filter.py",
    "test_safe_exit.py",
    "test_gui.py",
    "test_embedded_lab.py",
    "test_angle_noise.py",
    "test_sim_serve.py",
    "test_field_sweep_transit.py",
    "test_spin_noise.py",
)


def pytest_collection_modifyitems(items):
    """Put the slowest modules first (the order within a module is kept)."""
    rank = {name: i for i, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def quiet_root_logger():
    """Remove the root-logger handlers a test adds (the monitor's log view, as pymeasure's
    ManagedWindow does, installs one and never removes it)."""
    import logging

    before = list(logging.getLogger().handlers)
    yield
    for handler in logging.getLogger().handlers:
        if handler not in before:
            logging.getLogger().removeHandler(handler)

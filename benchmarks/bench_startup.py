"""Start-up cost of the `hotspin` command line against `python -c pass`, in CPU seconds.

Each command runs in a fresh interpreter, interleaved round by round with the baseline; CPU time
(user + system of the child) is what a shared machine's load changes least. The catalogue cache
is warmed first, as it is after a user's first `hotspin list`.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile

ROUNDS = 15
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "hotspin --help": [sys.executable, "-m", "hotspin.cli", "--help"],
    "hotspin --version": [sys.executable, "-m", "hotspin.cli", "--version"],
    "hotspin list": [sys.executable, "-m", "hotspin.cli", "list"],
    "hotspin run --help": [sys.executable, "-m", "hotspin.cli", "run", "--help"],
}


def child_cpu_s(command: list[str], env: dict[str, str]) -> float:
    """Return the user + system CPU seconds that one run of ``command`` costs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    """Print each command's median CPU cost and its ratio to `python -c pass`."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "HOTSPIN_CACHE_DIR": cache}
        subprocess.run(COMMANDS["hotspin list"], env=env, stdout=subprocess.DEVNULL, check=True)
        samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(ROUNDS):
            for name, command in COMMANDS.items():
                samples[name].append(child_cpu_s(command, env))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["python -c pass"]
    print(f"median CPU of {ROUNDS} runs each, interleaved (target: ≤ 10 × python -c pass)")
    for name, value in medians.items():
        print(f"  {name:20s} {1e3 * value:7.1f} ms   {value / base:5.1f} ×")


if __name__ == "__main__":
    main()

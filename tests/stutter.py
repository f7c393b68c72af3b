"""Run a command while freezing its whole process group at random moments: how the
suite was checked for timing assumptions (a CI box whose tests get no CPU for a while).

    python tests/stutter.py MAX_STOP_MS MAX_RUN_MS -- pytest -n 2 -p no:cacheprovider tests

Between freezes the command runs 50 ms to MAX_RUN_MS; each freeze (SIGSTOP, then
SIGCONT) lasts up to MAX_STOP_MS. ``STUTTER_SEED`` picks the schedule. The exit
status is the command's.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    max_stop, max_run = int(argv[1]) / 1000, int(argv[2]) / 1000
    cmd = argv[argv.index("--") + 1:]
    proc = subprocess.Popen(cmd, start_new_session=True)
    rng = random.Random(int(os.environ.get("STUTTER_SEED", "1")))
    try:
        while proc.poll() is None:
            time.sleep(rng.uniform(0.05, max_run))
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, signal.SIGSTOP)
            time.sleep(rng.uniform(0.0, max_stop))
            os.killpg(proc.pid, signal.SIGCONT)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

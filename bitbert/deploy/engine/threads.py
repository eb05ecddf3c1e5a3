"""The engine's default thread count: as many threads as there are idle cores right now, at least 1.

The layer kernels split each step statically over threads and wait for the slowest; on a machine
whose cores are busy, one descheduled thread stalls every step for a scheduler time slice, and the
forward became 10-90x slower than at 1 thread. So the default counts the tasks running on the
machine at the moment of the call (Linux /proc/loadavg: instantaneous, unlike the load averages)
and only uses the cores nobody else is using."""
from __future__ import annotations

import os

_LOADAVG = "/proc/loadavg"


def running_elsewhere() -> float:
    """Tasks running on the machine now other than the caller (Linux); else the 1-minute load average."""
    try:
        with open(_LOADAVG) as f:
            running = int(f.read().split()[3].split("/")[0])  # "0.52 0.58 0.59 3/98 1234": 3 running now
        return max(0, running - 1)  # the reading thread itself is running
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:  # no load information at all: assume the machine is ours
            return 0.0


def idle_threads(limit: int) -> int:
    """Threads to use now: the cores not busy with other work, between 1 and ``limit``."""
    cores = os.cpu_count() or 1
    return max(1, min(limit, int(cores - running_elsewhere())))

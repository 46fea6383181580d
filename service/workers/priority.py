"""A worker process at the priority and thread count it was configured for.

Ray starts its worker processes with a raised nice value (15 was observed for the edit actor), so on a
machine shared with any other CPU-bound process the worker, which *is* the service's work, gets a small
share of the CPUs: an edit that took 1 min 37 s in-process took 5 min 18 s as a job in the same minute.
`run_at_priority` resets every thread of the process to the configured nice value (Linux keeps one per
thread; threads started later inherit the caller's) and gives torch its threads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("suture.worker")


def _thread_ids() -> list[int]:
    tasks = Path("/proc/self/task")
    return [int(p.name) for p in tasks.iterdir()] if tasks.is_dir() else [0]


def set_nice(nice: int) -> int:
    """Set every thread of this process to `nice` (-20..19); returns the nice value now in force.

    Lowering the value below the current one needs CAP_SYS_NICE (root, or a raised RLIMIT_NICE); without
    it the value is left as it was and a warning names the setting to change.
    """
    for tid in _thread_ids():
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except PermissionError:
            log.warning("cannot set the worker's nice value to %d (now %d): not permitted; set worker_nice "
                        "(SUTURE_WORKER_NICE) to a value this user may set", nice, os.getpriority(os.PRIO_PROCESS, 0))
            break
    return os.getpriority(os.PRIO_PROCESS, 0)


def run_at_priority(nice: int | None, threads: int) -> dict[str, int]:
    """Apply the worker's nice value (None: leave Ray's) and torch thread count; returns what is in force."""
    current = set_nice(nice) if nice is not None else os.getpriority(os.PRIO_PROCESS, 0)
    import torch  # after the priority: at nice 15 on a busy machine even this import takes minutes

    torch.set_num_threads(threads)
    return {"nice": current, "threads": torch.get_num_threads()}

"""CPU seconds of process trees and of the whole machine, from /proc (Linux; standard library).

Benchmarks on a few shared cores split each request's CPU between its participants with these:
every microsecond one process spends is taken from the others. Read-only, any thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_after_comm(pid) -> Optional[List[str]]:
    """/proc/<pid>/stat from field 3 (state) on; the command name may hold spaces."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def tree_cpu_s(roots: List[int]) -> float:
    """CPU seconds of `roots` (all threads) and their live descendants, plus what reaped children
    left in each (cutime/cstime), so a PostgreSQL backend that ended inside a window counts."""
    children: Dict[int, List[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = _stat_after_comm(d)
            if f:
                children.setdefault(int(f[1]), []).append(int(d))
    ticks, stack, seen = 0, list(roots), set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        f = _stat_after_comm(pid)
        if f:
            ticks += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
            stack += children.get(pid, [])
    return ticks / CLK_TCK


def machine_busy_s() -> float:
    """Busy CPU seconds of all CPUs since boot (user, nice, system, irq, softirq; not steal)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / CLK_TCK

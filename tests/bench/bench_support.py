"""What the Python benchmarks share: set-up errors, finding tools, a free block of loopback ports,
running a command with a deadline, percentiles and stopping the local cluster (standard library).

Each benchmark starts its own local cluster (`tallyctl cluster up`) on a block of ports it found
free, and stops it with `tallyctl cluster down` (only the processes it started). Any thread.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Callable, List, Optional

PORT_BLOCK = 200  # ports checked free from the base port up (a cluster uses far fewer)


class SetupError(Exception):
    """A server could not be started or the data could not be loaded: the benchmark did not run."""


def find_tool(name: str, *candidates: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    raise SetupError(f"{name} not found (scripts/install-deps.sh installs it)")


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_base_port(requested: Optional[int]) -> int:
    """`requested` if its whole block is free; else a random free block below the ephemeral range
    (random, so two benchmarks or a rerun right after one do not fight over the same ports)."""
    candidates = ([requested] if requested
                  else random.sample(range(20000, 32000 - PORT_BLOCK, PORT_BLOCK),
                                     (32000 - PORT_BLOCK - 20000) // PORT_BLOCK))
    for base in candidates:
        if all(port_free(p) for p in range(base, base + PORT_BLOCK)):
            return base
    if requested:
        raise SetupError(f"ports {requested}..{requested + PORT_BLOCK - 1} are not all free")
    raise SetupError(f"no block of {PORT_BLOCK} free loopback ports found")


def run_cmd(cmd: List[str], timeout: float, env=None, what: str = "") -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise SetupError(f"{what or cmd[0]} timed out after {timeout:.0f} s") from e


def percentile(sorted_vals: List[int], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of ascending values; NaN when there are none."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(round(q * len(sorted_vals) + 0.5)) - 1))
    return float(sorted_vals[k])


def cluster_down(tallyctl: str, cluster_dir: Path, log: Callable[[str], None],
                 timeout: float = 180) -> None:
    """`tallyctl cluster down` if the cluster got as far as writing cluster.json; failures are
    logged, not raised (this runs in clean-up)."""
    if not (cluster_dir / "cluster.json").exists():
        return
    log("tallyctl cluster down")
    try:
        r = subprocess.run([tallyctl, "cluster", "down", "--dir", str(cluster_dir)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            log(f"cluster down failed (exit {r.returncode}): {r.stdout.strip()}")
    except subprocess.TimeoutExpired:
        log("cluster down timed out")

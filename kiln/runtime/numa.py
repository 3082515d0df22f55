"""`--numa`: where the compute threads may run on a machine with several NUMA nodes.

As in ik_llama.cpp (ggml_numa_init): `distribute` spreads threads over every node's CPUs,
`isolate` keeps them on the node the process started on, `numactl` keeps the CPU set
numactl gave the process. kiln sets the process's CPU affinity before its thread pools
start (threads inherit it); the OS places each thread within that set. Like ik_llama.cpp,
it warns when the kernel's automatic NUMA balancing is on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("kiln.runtime")

NODES = Path("/sys/devices/system/node")
BALANCING = Path("/proc/sys/kernel/numa_balancing")
BALANCING_WARNING = "WARNING: /proc/sys/kernel/numa_balancing is enabled, this has been observed to impair performance"


def parse_cpu_list(text: str) -> set[int]:
    """'0-3,8,10-11' -> {0, 1, 2, 3, 8, 10, 11}."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def node_cpus(nodes: Path = NODES) -> dict[int, set[int]]:
    """CPUs of every NUMA node (one node holding every CPU when the machine shows none)."""
    found = {}
    for d in sorted(nodes.glob("node[0-9]*")) if nodes.is_dir() else []:
        cpulist = d / "cpulist"
        if cpulist.is_file():
            found[int(d.name[4:])] = parse_cpu_list(cpulist.read_text())
    return found or {0: set(range(os.cpu_count() or 1))}


def placement(mode: str, current: set[int], nodes: dict[int, set[int]]) -> set[int]:
    """The CPU set threads may use under `mode`, given the process's current set."""
    if mode == "numactl":
        return set(current)
    if mode == "isolate":
        here = min(current)  # the node of the first CPU the process may run on
        for cpus in nodes.values():
            if here in cpus:
                return cpus & current or cpus
        return set(current)
    return set().union(*nodes.values())  # distribute


def apply(mode: str | None, nodes: Path = NODES, balancing: Path = BALANCING) -> set[int] | None:
    """Apply `--numa mode` to this process; returns the CPU set, None without --numa."""
    if mode is None:
        return None
    try:
        if balancing.read_text().strip() != "0":
            log.warning(BALANCING_WARNING)
    except OSError:
        pass
    cpus = placement(mode, os.sched_getaffinity(0), node_cpus(nodes))
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as e:  # CPUs outside the cgroup's set: keep what we have
        log.warning("--numa %s: cannot run on CPUs %s (%s); keeping the current placement", mode, sorted(cpus), e)
        return os.sched_getaffinity(0)
    return cpus

"""Peak memory and CPU time of a process tree, sampled by a background thread.

Meltano runs the tap and the target as child processes, so ``wait4`` on the
``meltano`` process cannot see their resource use. The monitor polls the tree
under one root process instead. Peak memory comes from ``VmHWM`` in
``/proc/PID/status``: the kernel's high-water mark of the resident set, so a
short spike between two samples is still counted. CPU time is the last sample
taken before a process ended, so up to one interval of CPU time can be missed
per process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

DEFAULT_INTERVAL_SECONDS = 0.1

ROLE_TAP = "tap"
ROLE_DISCOVERY = "tap-discovery"
ROLE_TARGET = "target"
ROLE_MELTANO = "meltano"
ROLE_OTHER = "other"


def classify(cmdline: list[str]) -> str:
    """Name the role of a process of a ``meltano run`` tree from its command line.

    The program is the first argument that is not a Python interpreter, so
    ``python .../bin/meltano run tap-qb-items target-postgres`` is Meltano.

    Args:
        cmdline: The process's arguments.

    Returns:
        ``tap``, ``tap-discovery``, ``target``, ``meltano`` or ``other``.
    """
    programs = [Path(arg).name for arg in cmdline if not arg.startswith("-")]
    program = next((name for name in programs if not name.startswith("python")), "")
    if program == "target-postgres":
        return ROLE_TARGET
    if program == "tap-quickbooks-backfill":
        return ROLE_DISCOVERY if "--discover" in cmdline else ROLE_TAP
    if program == "meltano":
        return ROLE_MELTANO
    return ROLE_OTHER


def read_peak_rss_bytes(pid: int) -> int | None:
    """Read the peak resident set size (``VmHWM``) of a process, in bytes.

    Args:
        pid: Process id.

    Returns:
        The high-water mark, or ``None`` when the process is gone or the kernel
        does not report it.
    """
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None

    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


@dataclass
class ProcessSample:
    """Figures the monitor sampled from one process.

    Attributes:
        pid: Process id.
        role: Role from :func:`classify`.
        started: Process start, epoch seconds.
        last_seen: Last time the process was seen alive, epoch seconds.
        peak_rss_bytes: Largest ``VmHWM`` (or RSS) read.
        cpu_seconds: User plus system CPU time at the last sample.
    """

    pid: int
    role: str
    started: float
    last_seen: float
    peak_rss_bytes: int = 0
    cpu_seconds: float = 0.0


@dataclass
class RoleUsage:
    """Resource use of every process of one role.

    Attributes:
        processes: Processes seen.
        peak_rss_bytes: Largest peak of any one of them.
        cpu_seconds: CPU time summed over them.
        first_start: Earliest start, epoch seconds.
        last_end: Latest last sighting, epoch seconds.
    """

    processes: int
    peak_rss_bytes: int
    cpu_seconds: float
    first_start: float
    last_end: float

    @property
    def wall_seconds(self) -> float:
        """Seconds from the first process's start to the last one's end."""
        return max(self.last_end - self.first_start, 0.0)


@dataclass
class TreeMonitor:
    """Samples a process and its descendants until stopped.

    Attributes:
        root_pid: The process whose tree is watched (included).
        interval: Seconds between samples.
    """

    root_pid: int
    interval: float = DEFAULT_INTERVAL_SECONDS
    samples: dict[int, ProcessSample] = field(default_factory=dict)
    _handles: dict[int, psutil.Process] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TreeMonitor:
        """Start sampling on a daemon thread; returns the monitor."""
        self._thread = threading.Thread(
            target=self._loop, name=f"tree-monitor-{self.root_pid}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take one last sample and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def usage(self) -> dict[str, RoleUsage]:
        """Sum what was seen per role.

        Returns:
            Role name to its usage, for the roles that had a process.
        """
        by_role: dict[str, list[ProcessSample]] = {}
        for sample in self.samples.values():
            by_role.setdefault(sample.role, []).append(sample)

        return {
            role: RoleUsage(
                processes=len(samples),
                peak_rss_bytes=max(s.peak_rss_bytes for s in samples),
                cpu_seconds=sum(s.cpu_seconds for s in samples),
                first_start=min(s.started for s in samples),
                last_end=max(s.last_seen for s in samples),
            )
            for role, samples in by_role.items()
        }

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)
        self._sample()

    def _sample(self) -> None:
        for process in self._tree():
            self._sample_process(process)

    def _tree(self) -> list[psutil.Process]:
        try:
            root = self._handles.get(self.root_pid) or psutil.Process(self.root_pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            # The root ended; its children may still be finishing.
            return [handle for handle in self._handles.values() if handle.is_running()]

    def _sample_process(self, process: psutil.Process) -> None:
        now = time.time()
        try:
            with process.oneshot():
                sample = self.samples.get(process.pid)
                if sample is None:
                    sample = ProcessSample(
                        pid=process.pid,
                        role=classify(process.cmdline()),
                        started=process.create_time(),
                        last_seen=now,
                    )
                    self.samples[process.pid] = sample
                    self._handles[process.pid] = process
                times = process.cpu_times()
                rss = process.memory_info().rss
        except psutil.Error:
            return

        peak = read_peak_rss_bytes(process.pid) or rss
        sample.peak_rss_bytes = max(sample.peak_rss_bytes, peak)
        sample.cpu_seconds = max(sample.cpu_seconds, times.user + times.system)
        sample.last_seen = now

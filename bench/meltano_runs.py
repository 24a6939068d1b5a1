"""Timed ``meltano`` commands and a timed target-postgres alone, with their resource use."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.procmon import ROLE_TAP, ROLE_TARGET, RoleUsage, TreeMonitor

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MELTANO = PROJECT_ROOT / ".venv" / "bin" / "meltano"
TARGET_EXECUTABLE = (
    PROJECT_ROOT / ".meltano" / "loaders" / "target-postgres" / "venv" / "bin" / "target-postgres"
)
# Variables of the caller's shell that would change what a benchmark run does.
_INHERITED_PREFIXES = ("TAP_", "TARGET_", "MELTANO_", "QBO_", "PG", "DBT_")
# Generated records lie in 2023 and 2024, Los Angeles time; this UTC range contains them all.
RANGE_START = "2023-01-01"
RANGE_END = "2025-01-02"


class CommandFailedError(RuntimeError):
    """A benchmarked command exited with an error."""


@dataclass
class TimedRun:
    """Wall time and resource use of one command.

    Attributes:
        wall_seconds: From start to exit of the command.
        roles: Resource use per process role (tap, target, meltano).
        started: Start, epoch seconds.
        finished: Exit, epoch seconds.
    """

    wall_seconds: float
    roles: dict[str, RoleUsage]
    started: float
    finished: float

    def role(self, name: str) -> RoleUsage | None:
        """Return the usage of one role, or ``None`` when no such process ran."""
        return self.roles.get(name)

    def pipeline_seconds(self) -> float | None:
        """Seconds from the tap's start to the target's end (Meltano's start-up excluded)."""
        tap = self.roles.get(ROLE_TAP)
        target = self.roles.get(ROLE_TARGET)
        if tap is None or target is None:
            return None
        return max(target.last_end - tap.first_start, 0.0)


@dataclass
class MeltanoRunner:
    """Runs project ``meltano`` commands with the benchmark's environment.

    Attributes:
        work_dir: Folder of logs, token store and per-run Meltano system databases.
        environment: Variables of every command.
    """

    work_dir: Path
    environment: dict[str, str] = field(default_factory=dict)
    _runs: int = 0

    def __post_init__(self) -> None:
        """Give the runs a Meltano system folder of their own, sharing the plugins.

        Meltano writes each run's tap config and catalog under
        ``<system folder>/run/<plugin>`` and deletes them when the run ends, so two
        runs of the same plugin in one project (a test suite and a benchmark) would
        delete each other's files. The private folder links to the installed plugin
        environments of ``.meltano`` and keeps its own ``run`` folder.
        """
        system_dir = self.system_dir("meltano-system")
        self.environment.setdefault("MELTANO_SYS_DIR_ROOT", str(system_dir))

    def system_dir(self, name: str) -> Path:
        """Create a Meltano system folder in the work folder that links the plugins."""
        system_dir = self.work_dir / name
        system_dir.mkdir(parents=True, exist_ok=True)
        for plugin_type in ("extractors", "loaders", "utilities", "transformers"):
            installed = PROJECT_ROOT / ".meltano" / plugin_type
            link = system_dir / plugin_type
            if installed.exists() and not link.exists():
                link.symlink_to(installed, target_is_directory=True)
        return system_dir

    def command_environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return the full environment of one command, with a fresh Meltano state."""
        self._runs += 1
        inherited = {
            key: value for key, value in os.environ.items()
            if not key.startswith(_INHERITED_PREFIXES)
        }
        system_db = self.work_dir / f"meltano-{self._runs}.db"
        return {
            **inherited,
            "MELTANO_PROJECT_ROOT": str(PROJECT_ROOT),
            "MELTANO_ENVIRONMENT": "dev",
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            # Every run starts without a bookmark, so it extracts the whole range.
            "MELTANO_DATABASE_URI": f"sqlite:///{system_db}",
            **self.environment,
            **(extra or {}),
        }

    def run(
        self,
        args: Sequence[str],
        *,
        label: str,
        env: Mapping[str, str] | None = None,
        stdout_path: Path | None = None,
    ) -> TimedRun:
        """Run ``meltano ARGS``, sample its process tree and wait for it.

        Args:
            args: Arguments after ``meltano``.
            label: Name of the log file, ``<label>.log`` in the work folder.
            env: Variables added for this command.
            stdout_path: File that receives standard output; the log by default.

        Returns:
            Wall time and resource use.

        Raises:
            CommandFailedError: If meltano exits with an error.
        """
        log_path = self.work_dir / f"{label}.log"
        command = [str(MELTANO), *args]
        with log_path.open("wb") as log:
            stdout = stdout_path.open("wb") if stdout_path else log
            try:
                return _timed(
                    command, env=self.command_environment(env), stdout=stdout,
                    stderr=log, log_path=log_path,
                )
            finally:
                if stdout_path:
                    stdout.close()

    def run_together(self, commands: Sequence[ParallelCommand]) -> TimedRun:
        """Run several ``meltano`` commands at once and wait for all of them.

        Each command gets a Meltano system folder of its own, because runs that share
        one delete each other's generated config of the loader they share.

        Args:
            commands: The commands, each with its label and extra variables.

        Returns:
            Wall time from the first start to the last exit, and resource use summed
            per role (peak memory is the largest of any one process).

        Raises:
            CommandFailedError: If any command exits with an error.
        """
        started = time.time()
        began = time.perf_counter()
        running = []
        for command in commands:
            log_path = self.work_dir / f"{command.label}.log"
            env = {
                **self.command_environment(command.env),
                "MELTANO_SYS_DIR_ROOT": str(self.system_dir(f"meltano-system-{command.label}")),
            }
            log = log_path.open("wb")
            process = subprocess.Popen(  # noqa: S603 - fixed command
                [str(MELTANO), *command.args], cwd=PROJECT_ROOT, env=env,
                stdout=log, stderr=log,
            )
            running.append((process, TreeMonitor(process.pid).start(), log, log_path))

        failures = []
        monitors = []
        for process, monitor, log, log_path in running:
            returncode = process.wait()
            monitor.stop()
            log.close()
            monitors.append(monitor)
            if returncode != 0:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
                failures.append(f"meltano exited with {returncode}; end of {log_path}:\n{tail}")
        wall = time.perf_counter() - began
        if failures:
            raise CommandFailedError("\n".join(failures))
        return TimedRun(
            wall_seconds=wall, roles=merge_usage(monitors), started=started,
            finished=time.time(),
        )

    def dump_target_config(self, path: Path) -> dict[str, Any]:
        """Write target-postgres's resolved config to ``path`` (mode 0600) and return it.

        The file contains the loader password; the caller deletes it with the work
        folder.
        """
        completed = subprocess.run(  # noqa: S603 - fixed command
            [str(MELTANO), "invoke", "--dump=config", "target-postgres"],
            cwd=PROJECT_ROOT,
            env=self.command_environment(),
            capture_output=True,
            check=False,
        )
        if completed.returncode != 0:
            msg = (
                "meltano could not resolve the target-postgres config: "
                f"{completed.stderr.decode(errors='replace')[-2000:]}"
            )
            raise CommandFailedError(msg)
        config = json.loads(completed.stdout)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(config, handle)
        return config


@dataclass(frozen=True)
class ParallelCommand:
    """One command of :meth:`MeltanoRunner.run_together`.

    Attributes:
        args: Arguments after ``meltano``.
        label: Name of its log file and system folder.
        env: Variables added for this command.
    """

    args: list[str]
    label: str
    env: dict[str, str]


def merge_usage(monitors: Sequence[TreeMonitor]) -> dict[str, RoleUsage]:
    """Combine the per-role usage of several process trees."""
    merged: dict[str, RoleUsage] = {}
    for monitor in monitors:
        for role, usage in monitor.usage().items():
            seen = merged.get(role)
            if seen is None:
                merged[role] = usage
                continue
            merged[role] = RoleUsage(
                processes=seen.processes + usage.processes,
                peak_rss_bytes=max(seen.peak_rss_bytes, usage.peak_rss_bytes),
                cpu_seconds=seen.cpu_seconds + usage.cpu_seconds,
                first_start=min(seen.first_start, usage.first_start),
                last_end=max(seen.last_end, usage.last_end),
            )
    return merged


def run_target_alone(
    config_path: Path, messages_path: Path, *, log_path: Path
) -> TimedRun:
    """Load a file of Singer messages with target-postgres alone, as Meltano would.

    Args:
        config_path: The target's config.
        messages_path: Singer messages, one per line.
        log_path: File for the target's output.

    Returns:
        Wall time and resource use of the target process.

    Raises:
        CommandFailedError: If the target exits with an error.
    """
    command = [str(TARGET_EXECUTABLE), "--config", str(config_path)]
    with messages_path.open("rb") as stdin, log_path.open("wb") as log:
        return _timed(
            command, env=dict(os.environ), stdout=log, stderr=log, stdin=stdin,
            log_path=log_path,
        )


def _timed(  # noqa: PLR0913
    command: list[str],
    *,
    env: Mapping[str, str],
    stdout: Any,  # noqa: ANN401 - a file object
    stderr: Any,  # noqa: ANN401 - a file object
    log_path: Path,
    stdin: Any = None,  # noqa: ANN401 - a file object
) -> TimedRun:
    started = time.time()
    began = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603 - fixed command
        command, cwd=PROJECT_ROOT, env=dict(env), stdin=stdin, stdout=stdout, stderr=stderr
    )
    monitor = TreeMonitor(process.pid).start()
    try:
        returncode = process.wait()
    finally:
        monitor.stop()
    wall = time.perf_counter() - began
    if returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        msg = f"{Path(command[0]).name} exited with {returncode}; end of {log_path}:\n{tail}"
        raise CommandFailedError(msg)
    return TimedRun(
        wall_seconds=wall, roles=monitor.usage(), started=started, finished=time.time()
    )

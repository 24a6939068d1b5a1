"""Background services that the Makefile starts: pid and log files in ``.run/``."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """Raised when a background service does not start or stop."""


@dataclass(frozen=True)
class BackgroundService:
    """A long-running command listening on a loopback TCP port.

    Attributes:
        name: Short name; the pid file is ``.run/<name>.pid``, the log ``.run/<name>.log``.
        run_dir: Folder of the pid and log files.
        port: TCP port on 127.0.0.1; the service is ready once it accepts connections.
    """

    name: str
    run_dir: Path
    port: int

    @property
    def pid_file(self) -> Path:
        """File with the service's process id."""
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        """File with the service's standard output and error."""
        return self.run_dir / f"{self.name}.log"

    def running_pid(self) -> int | None:
        """Return the pid from the pid file when that process is alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(self, command: list[str], *, timeout: float = 30.0) -> int:
        """Start ``command`` detached from this process and wait until its port accepts.

        Returns:
            The pid of the running service (the existing one when already running).

        Raises:
            ServiceError: When the port is taken by another program, or the service
                exits or does not listen within ``timeout`` seconds.
        """
        pid = self.running_pid()
        if pid is not None:
            logger.info("%s already running (pid %s)", self.name, pid)
            return pid
        if port_accepts(self.port):
            raise ServiceError(
                f"port {self.port} on 127.0.0.1 is already in use by another program: "
                f"stop it or choose another port for {self.name}"
            )

        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - command built by this package
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid}\n")

        deadline = time.monotonic() + timeout
        while not port_accepts(self.port):
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise ServiceError(
                    f"{self.name} exited with code {process.returncode} before listening "
                    f"on port {self.port}: see {self.log_file}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(
                    f"{self.name} did not listen on port {self.port} within {timeout:.0f} s: "
                    f"see {self.log_file}"
                )
            time.sleep(0.1)
        logger.info("%s started on 127.0.0.1:%s (pid %s)", self.name, self.port, process.pid)
        return process.pid

    def stop(self, *, timeout: float = 10.0) -> bool:
        """Send SIGTERM to the service's process group, then SIGKILL after ``timeout``.

        Returns:
            True when a running service was stopped.
        """
        pid = self.running_pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False

        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        logger.warning("%s (pid %s) ignored SIGTERM for %.0f s: killing it", self.name, pid,
                       timeout)
        os.killpg(pid, signal.SIGKILL)
        return True


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Return whether a TCP connection to ``host:port`` succeeds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0

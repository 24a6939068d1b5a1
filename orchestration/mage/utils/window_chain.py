"""Chain of windows: one Meltano run per window, resuming at the first unfinished one.

A ledger file in Mage's data folder records which windows of a range have
finished. A rerun of the same pipeline, range and window size skips those and
starts at the first unfinished window, whose own Meltano state then resumes
it where it stopped.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .backfill_request import BackfillRequest, UtcWindow, format_utc
from .backfill_secrets import BackfillSecrets
from .meltano_process import (
    LogLine,
    Redactor,
    SubprocessFailedError,
    build_subprocess_env,
    meltano_run_argv,
    state_id_suffix,
    stream_subprocess,
)


class WindowLedger:
    """JSON file listing the finished windows of one chain."""

    def __init__(self, path: Path) -> None:
        """Load the ledger at `path`, or start an empty one when it does not exist."""
        self.path = path
        self._finished: dict[str, dict[str, str]] = {}
        if path.exists():
            content = json.loads(path.read_text(encoding="utf-8"))
            self._finished = dict(content.get("finished_windows", {}))

    @classmethod
    def for_request(cls, data_dir: Path, request: BackfillRequest) -> WindowLedger:
        """Return the ledger of a request's range and window size under `data_dir`."""
        days = _chain_days(request)
        name = f"{request.window.key}__{days}d.json"
        return cls(
            data_dir
            / "qbo_backfill_chains"
            / request.pipeline_uuid
            / request.meltano_environment
            / name
        )

    def is_finished(self, window: UtcWindow) -> bool:
        """Return whether `window` finished in an earlier run."""
        return window.key in self._finished

    def mark_finished(self, window: UtcWindow, run_id: str) -> None:
        """Record `window` as finished and write the file atomically."""
        self._finished[window.key] = {
            "meltano_run_id": run_id,
            "finished_at_utc": format_utc(datetime.now(UTC)),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        content = json.dumps({"finished_windows": self._finished}, indent=2, sort_keys=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=self.path.parent, delete=False, encoding="utf-8", suffix=".tmp"
        ) as handle:
            handle.write(content)
        os.replace(handle.name, self.path)


def _chain_days(request: BackfillRequest) -> int:
    if len(request.chain) <= 1:
        return 0
    first = request.chain[0]
    return round((first.end - first.start).total_seconds() / 86400)


@dataclass(frozen=True)
class ChainSummary:
    """Outcome of a chain run: windows extracted now and windows skipped as finished."""

    extracted: tuple[str, ...]
    skipped: tuple[str, ...]

    def to_output(self) -> dict[str, list[str]]:
        """Return plain JSON values for the block's output."""
        return {"extracted_windows": list(self.extracted), "skipped_windows": list(self.skipped)}


def run_window_chain(
    request: BackfillRequest,
    secrets: BackfillSecrets,
    ledger: WindowLedger,
    log_line: LogLine,
    *,
    new_run_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> ChainSummary:
    """Run `meltano run` for each unfinished window of the request, one after another.

    Args:
        request: The backfill request; its `chain` lists the windows.
        secrets: Credentials for the subprocess environment.
        ledger: Finished windows; updated after each successful window.
        log_line: Receives progress lines and Meltano's redacted log lines.
        new_run_id: Source of Meltano run IDs, for tests.

    Returns:
        The windows extracted and skipped.

    Raises:
        SubprocessFailedError: Meltano failed on a window; later windows did not run.
    """
    redactor = Redactor(secrets.credential_values())
    total = len(request.chain)
    extracted: list[str] = []
    skipped: list[str] = []

    for position, window in enumerate(request.chain, start=1):
        label = f"{request.entity} window {position}/{total} {window}"
        if ledger.is_finished(window) and not request.full_refresh:
            log_line(f"{label}: already finished in an earlier run, skipped")
            skipped.append(window.key)
            continue

        run_id = new_run_id()
        argv = meltano_run_argv(request, window, run_id)
        log_line(
            f"{label}: meltano --environment {request.meltano_environment} run "
            f"{request.meltano_job} (state ID suffix {state_id_suffix(window)}, "
            f"run ID {run_id})"
        )

        started = time.monotonic()
        outcome = stream_subprocess(
            argv,
            env=build_subprocess_env(request, secrets, window),
            cwd=request.project_root,
            log_line=log_line,
            redactor=redactor,
        )
        elapsed = time.monotonic() - started

        if outcome.exit_code != 0:
            raise SubprocessFailedError(
                f"{label}: meltano run {request.meltano_job} failed with exit code "
                f"{outcome.exit_code} after {elapsed:.1f} s; the Meltano log lines above "
                "show why. Fix the cause and run the pipeline again with the same "
                "variables: it resumes at this window."
            )

        ledger.mark_finished(window, run_id)
        extracted.append(window.key)
        log_line(f"{label}: finished in {elapsed:.1f} s")

    return ChainSummary(extracted=tuple(extracted), skipped=tuple(skipped))

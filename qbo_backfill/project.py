"""Location of the Meltano project that the commands act on."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """Return the project root: ``MELTANO_PROJECT_ROOT``, else the nearest ``meltano.yml``.

    Searches the current folder and its parents, and falls back to the current
    folder when none contains a ``meltano.yml``.
    """
    configured = os.environ.get("MELTANO_PROJECT_ROOT")
    if configured:
        return Path(configured).resolve()

    cwd = Path.cwd().resolve()
    for folder in [cwd, *cwd.parents]:
        if (folder / "meltano.yml").is_file():
            return folder
    return cwd

"""Start an emulator in-process for tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from qbo_emulator import DEFAULT_REFRESH_TOKEN, TOKEN_PATH
from qbo_emulator.company import CompanySpec
from qbo_emulator.control import ControlClient
from qbo_emulator.server import Emulator, ServerThread
from qbo_emulator.state import Settings


@dataclass
class RunningEmulator:
    """A running emulator and what a client needs to reach it."""

    base_url: str
    realm_id: str
    client_id: str
    client_secret: str
    refresh_token: str
    emulator: Emulator = field(repr=False)
    control: ControlClient = field(repr=False)

    @property
    def token_url(self) -> str:
        """Return the OAuth token URL."""
        return self.base_url + TOKEN_PATH

    @property
    def api_base(self) -> str:
        """Return the company's API base, ``{base_url}/v3/company/{realm}``."""
        return f"{self.base_url}/v3/company/{self.realm_id}"


def build_emulator(invoices: int | None = None, customers: int | None = None,
                   items: int | None = None, seed: int = 7, tie_size: int | None = None,
                   include_captured: bool | None = None,
                   refresh_token: str = DEFAULT_REFRESH_TOKEN,
                   **settings: object) -> Emulator:
    """Create an emulator (not yet serving) from company sizes and settings."""
    spec = CompanySpec(invoices=invoices, customers=customers, items=items, seed=seed,
                       tie_size=tie_size, include_captured=include_captured)
    config = Settings()
    config.update(dict(settings))
    emulator = Emulator(spec, config)
    emulator.set_initial_refresh_token(refresh_token)
    return emulator


@contextlib.contextmanager
def run_emulator(invoices: int | None = None, customers: int | None = None,
                 items: int | None = None, seed: int = 7, tie_size: int | None = None,
                 include_captured: bool | None = None, host: str = "127.0.0.1",
                 port: int = 0, refresh_token: str = DEFAULT_REFRESH_TOKEN,
                 **settings: object) -> Iterator[RunningEmulator]:
    """Serve an emulator on a free loopback port for the duration of a block.

    Without sizes the company is the default one (captured records plus about
    2,000 invoices, 300 customers and 60 items). With any size given, the
    company contains exactly the generated rows requested, unless
    ``include_captured=True``. Other keyword arguments are settings, such as
    ``access_token_ttl``, ``rotation``, ``requests_per_minute``,
    ``max_concurrent``, ``latency_base_ms`` and ``latency_per_record_ms``.
    """
    emulator = build_emulator(invoices, customers, items, seed, tie_size,
                              include_captured, refresh_token, **settings)
    server = ServerThread(emulator, host, port)
    server.start()
    base_url = f"http://{host}:{server.port}"
    try:
        yield RunningEmulator(
            base_url=base_url,
            realm_id=emulator.settings.realm_id,
            client_id=emulator.settings.client_id,
            client_secret=emulator.settings.client_secret,
            refresh_token=refresh_token,
            emulator=emulator,
            control=ControlClient(base_url),
        )
    finally:
        server.stop()

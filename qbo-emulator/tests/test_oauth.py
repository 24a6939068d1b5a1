"""OAuth 2.0 refresh grant: credentials, rotation, expiry, revocation."""

from __future__ import annotations

import base64

import requests
from conftest import QboClient

from qbo_emulator.testing import run_emulator


def _refresh(emu, refresh_token: str, auth: tuple[str, str] | None = None,
             **kwargs) -> requests.Response:
    return requests.post(
        emu.token_url,
        auth=auth or (emu.client_id, emu.client_secret),
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        headers={"Accept": "application/json"},
        timeout=10,
        **kwargs,
    )


def test_refresh_answer_has_intuit_fields(small_emu) -> None:
    response = _refresh(small_emu, small_emu.refresh_token)
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["token_type", "expires_in", "refresh_token",
                          "x_refresh_token_expires_in", "access_token"]
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["x_refresh_token_expires_in"] == 8_726_400


def test_every_refresh_rotation_rejects_old_token(small_emu) -> None:
    first = _refresh(small_emu, small_emu.refresh_token).json()["refresh_token"]
    assert first != small_emu.refresh_token
    old = _refresh(small_emu, small_emu.refresh_token)
    assert old.status_code == 400
    assert old.json() == {"error_description": "Token invalid", "error": "invalid_grant"}
    assert _refresh(small_emu, first).status_code == 200
    assert _refresh(small_emu, first).status_code == 400


def test_period_rotation_keeps_token_until_period_ends() -> None:
    with run_emulator(invoices=1, customers=1, items=1, rotation="period:3600") as emu:
        same = _refresh(emu, emu.refresh_token).json()["refresh_token"]
        assert same == emu.refresh_token
        assert _refresh(emu, emu.refresh_token).status_code == 200
        emu.control.advance_clock(3601)
        rotated = _refresh(emu, emu.refresh_token).json()["refresh_token"]
        assert rotated != emu.refresh_token
        assert _refresh(emu, emu.refresh_token).status_code == 400
        assert _refresh(emu, rotated).status_code == 200


def test_wrong_client_credentials_are_invalid_client(small_emu) -> None:
    response = _refresh(small_emu, small_emu.refresh_token, auth=("demo-client-id", "nope"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    missing = requests.post(small_emu.token_url, data={"grant_type": "refresh_token",
                                                       "refresh_token": "x"}, timeout=10)
    assert missing.status_code == 401
    # A rejected client does not use up the refresh token.
    assert _refresh(small_emu, small_emu.refresh_token).status_code == 200


def test_wrong_grant_type_and_body_rejected(small_emu) -> None:
    basic = base64.b64encode(b"demo-client-id:demo-client-secret").decode()
    response = requests.post(small_emu.token_url,
                             data={"grant_type": "authorization_code", "code": "x"},
                             headers={"Authorization": f"Basic {basic}"}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    response = requests.post(small_emu.token_url, json={"grant_type": "refresh_token"},
                             headers={"Authorization": f"Basic {basic}"}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_access_token_expires_after_ttl() -> None:
    with run_emulator(invoices=3, customers=1, items=1, access_token_ttl=60) as emu:
        client = QboClient(emu)
        assert client.get("SELECT * FROM Invoice").status_code == 200
        emu.control.advance_clock(61)
        response = client.get("SELECT * FROM Invoice")
        assert response.status_code == 401
        body = response.json()
        assert body["fault"]["type"] == "AUTHENTICATION"
        assert body["fault"]["error"][0]["code"] == "3200"
        assert body["fault"]["error"][0]["detail"].startswith("Token expired")
        assert isinstance(body["time"], int)
        assert client.refresh().status_code == 200
        assert client.get("SELECT * FROM Invoice").status_code == 200


def test_missing_or_unknown_bearer_is_401(small_client: QboClient) -> None:
    response = small_client.get("SELECT * FROM Item", headers={"Accept": "application/json"})
    assert response.status_code == 401
    response = small_client.get("SELECT * FROM Item", headers={
        "Authorization": "Bearer not-a-token", "Accept": "application/json"})
    assert response.status_code == 401
    assert response.json()["fault"]["error"][0]["detail"] == "Token invalid"
    assert "not-a-token" not in response.text


def test_wrong_realm_is_403(small_client: QboClient) -> None:
    response = small_client.session.get(
        f"{small_client.emu.base_url}/v3/company/123/query",
        params={"query": "SELECT * FROM Item"}, headers=small_client.headers(), timeout=10)
    assert response.status_code == 403
    assert response.json()["fault"]["error"][0]["code"] == "3100"


def test_revoked_refresh_tokens_get_invalid_grant(small_client: QboClient) -> None:
    assert small_client.refresh().status_code == 200
    small_client.emu.control.revoke_refresh_tokens()
    response = small_client.refresh()
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    small_client.emu.control.reset_tokens()
    small_client.refresh_token = small_client.emu.refresh_token
    assert small_client.refresh().status_code == 200


def test_expire_access_tokens(small_client: QboClient) -> None:
    assert small_client.get("SELECT * FROM Item").status_code == 200
    small_client.emu.control.expire_access_tokens()
    assert small_client.get("SELECT * FROM Item").status_code == 401

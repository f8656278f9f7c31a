"""Every documented auth scheme, and every way to get it wrong."""

from __future__ import annotations

import time

import pytest
import requests


def test_partner_token_shape(api):
    r = api.partner_token()
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert body["access_token"].count(".") == 2 and body["refresh_token"]


def test_partner_token_without_basic_auth(api):
    r = requests.post(f"{api.base_url}/oauth/partner/access-token", timeout=10)
    assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"
    assert r.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("auth", [("sandbox-client-id", "wrong"), ("someone-else", "sandbox-secret-key")])
def test_partner_token_with_wrong_credentials(api, auth):
    r = api.partner_token(auth=auth)
    assert r.status_code == 401 and r.json()["code"] == "INVALID_CLIENT"
    assert "sandbox-secret-key" not in r.text


def test_partner_token_with_garbage_basic_header(api):
    r = requests.post(f"{api.base_url}/oauth/partner/access-token",
                      headers={"Authorization": "Basic !!notbase64"}, timeout=10)
    assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"


def test_refresh_issues_a_new_pair(api):
    first = api.partner_token().json()
    r = requests.post(f"{api.base_url}/oauth/partner/access-token/refresh", auth=("sandbox-client-id",
                      "sandbox-secret-key"), data={"refresh_token": first["refresh_token"]}, timeout=10)
    assert r.status_code == 200
    assert api.user_token(r.json()["access_token"]).status_code == 200


@pytest.mark.parametrize("form, status, code", [({}, 400, "PARAMS_INVALID"),
                                                ({"refresh_token": "a.b.c"}, 401, "TOKEN_INVALID")])
def test_refresh_with_bad_refresh_token(api, form, status, code):
    r = requests.post(f"{api.base_url}/oauth/partner/access-token/refresh",
                      auth=("sandbox-client-id", "sandbox-secret-key"), data=form, timeout=10)
    assert (r.status_code, r.json()["code"]) == (status, code)


def test_refresh_with_an_access_token_is_refused(api):
    access = api.partner_token().json()["access_token"]
    r = requests.post(f"{api.base_url}/oauth/partner/access-token/refresh",
                      auth=("sandbox-client-id", "sandbox-secret-key"), data={"refresh_token": access}, timeout=10)
    assert (r.status_code, r.json()["code"]) == (401, "TOKEN_INVALID")


def test_user_token_needs_a_partner_bearer(api):
    r = requests.post(f"{api.base_url}/open/partner/users/access-token", json={"user_id": "someone"}, timeout=10)
    assert (r.status_code, r.json()["code"]) == (401, "UNAUTHORIZED")


def test_user_token_with_expired_partner_token(api, configure):
    configure(partner_token_ttl_s=1)
    partner = api.partner_token().json()
    assert partner["expires_in"] == 1
    time.sleep(1.1)
    r = api.user_token(partner["access_token"])
    assert (r.status_code, r.json()["code"]) == (401, "TOKEN_EXPIRED")


def test_tampered_token_is_refused(api):
    token = api.partner_token().json()["access_token"]
    header, body, signature = token.split(".")
    r = api.user_token(f"{header}.{body}.{signature[:-2]}AA")
    assert (r.status_code, r.json()["code"]) == (401, "TOKEN_INVALID")


def test_a_user_token_is_not_a_partner_token(api):
    user_token = api.new_user_token()
    r = api.user_token(user_token)
    assert (r.status_code, r.json()["code"]) == (401, "TOKEN_INVALID")


@pytest.mark.parametrize("user_id", ["short", "x" * 121, 12345678, None])
def test_user_id_must_be_6_to_120_characters(api, user_id):
    partner = api.partner_token().json()["access_token"]
    r = api.user_token(partner, user_id)
    assert (r.status_code, r.json()["code"]) == (400, "USER_ID_INVALID")


@pytest.mark.parametrize("expires_in", [0, -5, "3600", 10**9, True])
def test_user_token_expires_in_is_checked(api, expires_in):
    partner = api.partner_token().json()["access_token"]
    r = api.user_token(partner, expires_in=expires_in)
    assert (r.status_code, r.json()["code"]) == (400, "PARAMS_INVALID")


def test_upload_endpoints_need_a_user_token(api):
    partner = api.partner_token().json()["access_token"]
    r = api.presign(partner, 1000)
    assert (r.status_code, r.json()["code"]) == (401, "TOKEN_INVALID")
    r = requests.post(f"{api.base_url}/open/partner/files/upload/complete-upload", json={}, timeout=10)
    assert (r.status_code, r.json()["code"]) == (401, "UNAUTHORIZED")


def test_expired_user_token(api):
    partner = api.partner_token().json()["access_token"]
    user = api.user_token(partner, expires_in=1).json()["access_token"]
    time.sleep(1.1)
    r = api.presign(user, 1000)
    assert (r.status_code, r.json()["code"]) == (401, "TOKEN_EXPIRED")


def test_transcription_api_needs_client_id_and_api_key(api):
    r = requests.post(f"{api.base_url}/open/partner/ai/transcriptions/", json={"file_url": "http://x/a.mp3"},
                      timeout=10)
    assert (r.status_code, r.json()["code"]) == (401, "UNAUTHORIZED")
    r = api.submit("http://x/a.mp3", api_key="wrong-key")
    assert (r.status_code, r.json()["code"]) == (401, "API_KEY_INVALID")
    r = api.get("task_exec_whatever", api_key="wrong-key")
    assert (r.status_code, r.json()["code"]) == (401, "API_KEY_INVALID")
    r = api.submit("http://x/a.mp3", client_id="another-client")
    assert (r.status_code, r.json()["code"]) == (401, "API_KEY_INVALID")


def test_transcription_api_takes_no_bearer_token(api):
    partner = api.partner_token().json()["access_token"]
    r = requests.post(f"{api.base_url}/open/partner/ai/transcriptions/", json={"file_url": "http://x/a.mp3"},
                      headers={"Authorization": f"Bearer {partner}"}, timeout=10)
    assert r.status_code == 401


def test_partner_token_rate_limit_is_10_per_minute_per_client(api):
    statuses = [api.partner_token().status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    r = api.partner_token()
    assert r.json()["code"] == "RATE_LIMITED"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert api.stats()["partner_tokens_issued"] == 10


def test_transcription_rate_limit_is_configurable_and_counts_submit_and_get(api, configure):
    configure(tx_rate_limit="3/m")
    assert api.submit("http://127.0.0.1:1/a.mp3").status_code == 200
    assert api.get("task_exec_unknown").status_code == 404
    assert api.submit("http://127.0.0.1:1/a.mp3").status_code == 200
    r = api.get("task_exec_unknown")
    assert (r.status_code, r.json()["code"]) == (429, "RATE_LIMITED")
    assert "Retry-After" in r.headers


def test_tx_arrivals_list_every_transcription_request_in_order_and_mark_the_refused(api, configure):
    configure(tx_rate_limit="2/m")
    before = api.http.get(f"{api.origin}/_sandbox/tx_arrivals", timeout=30).json()
    assert (before["arrivals_s"], before["refused_s"], before["total"], before["dropped"]) == ([], [], 0, 0)
    statuses = [api.get("task_exec_unknown").status_code for _ in range(3)]
    assert statuses == [404, 404, 429]
    api.partner_token()  # not a Transcription API request
    arrivals = api.http.get(f"{api.origin}/_sandbox/tx_arrivals", timeout=30).json()
    assert arrivals["total"] == 3 and arrivals["dropped"] == 0
    assert len(arrivals["arrivals_s"]) == 3 and arrivals["arrivals_s"] == sorted(arrivals["arrivals_s"])
    assert 0 <= arrivals["arrivals_s"][0] < 60
    assert arrivals["refused_s"] == arrivals["arrivals_s"][2:]
    assert abs(arrivals["started_at"] - time.time()) < 600

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from plaud.sandbox.signing import SignatureError, Signer, TokenError


def test_token_round_trip_and_claims():
    signer = Signer.random()
    token = signer.issue_token("user", 60, now=1000, client_id="c", user_id="u-123456")
    claims = signer.verify_token(token, "user", now=1059)
    assert (claims["client_id"], claims["user_id"], claims["exp"]) == ("c", "u-123456", 1060)


@pytest.mark.parametrize("mutate, code", [
    (lambda t: t + "x", "TOKEN_INVALID"),
    (lambda t: "garbage", "TOKEN_INVALID"),
    (lambda t: Signer.random().issue_token("user", 60, now=1000), "TOKEN_INVALID"),
])
def test_token_refusals(mutate, code):
    signer = Signer.random()
    token = mutate(signer.issue_token("user", 60, now=1000))
    with pytest.raises(TokenError) as info:
        signer.verify_token(token, "user", now=1001)
    assert info.value.code == code


def test_token_expiry_and_kind():
    signer = Signer.random()
    token = signer.issue_token("partner", 60, now=1000)
    with pytest.raises(TokenError, match="expired"):
        signer.verify_token(token, "partner", now=1060)
    with pytest.raises(TokenError, match="a user token is required"):
        signer.verify_token(token, "user", now=1001)


def test_presigned_url_verifies_until_it_expires():
    signer = Signer.random()
    url = signer.presign("http://h", "/_storage/files/f.mp3", 100, now=1_700_000_000)
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    signer.verify_presigned(parts.path, query, now=1_700_000_099)
    with pytest.raises(SignatureError, match="expired"):
        signer.verify_presigned(parts.path, query, now=1_700_000_100)
    with pytest.raises(SignatureError) as info:
        signer.verify_presigned("/_storage/files/g.mp3", query, now=1_700_000_001)
    assert info.value.code == "SignatureDoesNotMatch"
    with pytest.raises(SignatureError) as info:
        signer.verify_presigned(parts.path, {}, now=1_700_000_001)
    assert info.value.code == "AccessDenied"

"""Webhook signing, its verification snippet, and the SSRF guard."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from tasks.notify import UnsafeWebhook, check_destination, sign, verify


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"event_id":"e1"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", "1700000000", body) == f"v1={expected}"


def test_verify_accepts_only_the_right_secret_body_and_a_recent_timestamp():
    body = b'{"event_id":"e1"}'
    signature = sign("s3cret", "1700000000", body)
    assert verify("s3cret", "1700000000", body, signature, now=1700000100)
    assert not verify("other", "1700000000", body, signature, now=1700000100)
    assert not verify("s3cret", "1700000000", body + b" ", signature, now=1700000100)
    assert not verify("s3cret", "1700000000", body, signature, now=1700001000)  # replayed too late
    assert not verify("s3cret", "yesterday", body, signature, now=1700000100)


@pytest.mark.parametrize("url", ["http://127.0.0.1/hook", "http://10.1.2.3/hook", "http://192.168.0.9/hook",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/hook",
                                 "http://localhost:8080/hook", "http://0.0.0.0/hook", "ftp://example.org/x"])
def test_private_destinations_are_refused(url):
    with pytest.raises(UnsafeWebhook):
        check_destination(url, allow_private=False)


def test_public_addresses_pass_and_private_ones_can_be_allowed():
    check_destination("https://93.184.216.34/hook", allow_private=False)
    check_destination("http://127.0.0.1:9000/hook", allow_private=True)

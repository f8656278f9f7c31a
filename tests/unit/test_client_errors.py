"""Status-to-exception mapping, the translation of urllib3's exceptions, retry decisions."""

from __future__ import annotations

import random
import socket
import ssl
import threading

import pytest
import urllib3
from urllib3.util.ssl_match_hostname import CertificateError as HostnameMismatch

from plaud import retry
from plaud.errors import (
    AuthError,
    BadRequest,
    BudgetSpent,
    FatalError,
    NotFound,
    PlaudConnectionError,
    PlaudTimeout,
    RateLimited,
    RetryableError,
    ServerError,
)
from plaud.transport import Transport, error_for_response, translated


@pytest.mark.parametrize("status, body, cls, code", [
    (400, '{"code": "FILE_TYPE_INVALID", "message": "no wav"}', BadRequest, "FILE_TYPE_INVALID"),
    (401, '{"code": "TOKEN_EXPIRED", "message": "old"}', AuthError, "TOKEN_EXPIRED"),
    (403, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", AuthError,
     "AccessDenied"),
    (404, "", NotFound, None),
    (409, '{"detail": "busy"}', BadRequest, None),
    (429, '{"code": "RATE_LIMITED"}', RateLimited, "RATE_LIMITED"),
    (500, "oops", ServerError, None),
    (503, "<html>down</html>", ServerError, None),
])
def test_status_maps_to_one_class(status, body, cls, code):
    error = error_for_response(status, {}, body, "/open/partner/x")
    assert type(error) is cls and error.code == code and error.status == status
    assert error.path == "/open/partner/x"
    assert error.retryable == issubclass(cls, RetryableError)


def test_retry_after_is_read_and_messages_are_redacted():
    error = error_for_response(429, {"Retry-After": "7"}, '{"message": "slow down Bearer eyJabc.def.ghi"}', "/p")
    assert error.retry_after_s == 7.0
    assert "eyJ" not in str(error) and "Bearer ***" in str(error)
    assert error_for_response(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, "", "/p").retry_after_s is None


@pytest.mark.parametrize("exc, cls, sent", [
    (urllib3.exceptions.NewConnectionError(None, "refused"), PlaudConnectionError, False),
    (urllib3.exceptions.NameResolutionError("nowhere.invalid", None, OSError("unknown host")), PlaudConnectionError,
     False),
    (urllib3.exceptions.ConnectTimeoutError(), PlaudTimeout, False),
    (urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"), PlaudTimeout, True),
    (urllib3.exceptions.ProtocolError("Connection aborted."), PlaudConnectionError, True),
    (urllib3.exceptions.SSLError(ssl.SSLCertVerificationError(1, "certificate verify failed")), PlaudConnectionError,
     False),
    (urllib3.exceptions.SSLError(HostnameMismatch("hostname 'a' doesn't match 'b'")), PlaudConnectionError, False),
    # Any other TLS failure may come while the answer is read: the request may have been applied.
    (urllib3.exceptions.SSLError(ssl.SSLError(1, "bad record mac")), PlaudConnectionError, True),
    (urllib3.exceptions.ProxyError("proxy said no", OSError()), PlaudConnectionError, False),
])
def test_urllib3_exceptions_are_translated(exc, cls, sent):
    error = translated(exc, "/developer/api/x")
    assert type(error) is cls and error.request_sent is sent and error.path == "/developer/api/x"


def test_a_refused_connection_was_never_sent_and_the_query_is_not_quoted():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PlaudConnectionError) as info:
        Transport().request("POST", f"http://127.0.0.1:{port}/developer/api/x?X-Amz-Signature=s3cr3t", json={})
    assert info.value.request_sent is False
    assert info.value.path == "/developer/api/x" and "s3cr3t" not in str(info.value)


def serve_raw(answer):
    """A one-connection TCP server that reads a request, then does ``answer(connection)``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            answer(connection)
        listener.close()

    threading.Thread(target=run, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_a_connection_dropped_after_the_request_may_have_been_applied():
    base = serve_raw(lambda connection: None)  # closes without answering
    with pytest.raises(PlaudConnectionError) as info:
        Transport().request("POST", base + "/open/partner/ai/transcriptions/", json={})
    assert type(info.value) is PlaudConnectionError and info.value.request_sent is True


def test_no_answer_in_time_is_a_timeout_after_sending():
    release = threading.Event()
    base = serve_raw(lambda connection: release.wait(5))
    try:
        with pytest.raises(PlaudTimeout) as info:
            Transport().request("GET", base + "/open/partner/ai/transcriptions/t1", read_timeout_s=0.2)
        assert info.value.request_sent is True
    finally:
        release.set()


def test_invalid_url_is_fatal():
    with pytest.raises(FatalError):
        Transport().request("GET", "http://")


def test_a_proxy_this_transport_cannot_use_is_a_fatal_error_that_says_so(monkeypatch):
    monkeypatch.setenv("ALL_PROXY", "socks5://proxy.internal:1080")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(FatalError, match="proxy"):
        Transport().request("GET", "https://api.plaud.example/x")


def test_backoff_is_capped_and_jitter_bounded():
    assert [retry.backoff_s(n, base_s=1, cap_s=5) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    rng = random.Random(1)
    assert all(2.0 <= retry.jittered(4.0, rng) <= 4.0 for _ in range(100))


def test_should_retry():
    assert retry.should_retry(ServerError("x"))
    assert not retry.should_retry(BadRequest("x"))
    assert not retry.should_retry(BudgetSpent("x", retry_after_s=3))
    lost = PlaudConnectionError("lost", request_sent=True)
    assert retry.should_retry(lost) and not retry.should_retry(lost, idempotent=False)
    assert retry.should_retry(PlaudConnectionError("refused", request_sent=False), idempotent=False)


def test_call_retries_then_gives_up_and_honours_retry_after():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        raise RateLimited("busy", retry_after_s=3)

    with pytest.raises(RateLimited):
        retry.call(flaky, retry.RetryPolicy(attempts=3), what="x", sleep=sleeps.append)
    assert len(calls) == 3 and sleeps == [3, 3]


def test_call_does_not_retry_fatal_errors():
    calls = []

    def fatal():
        calls.append(1)
        raise NotFound("gone")

    with pytest.raises(NotFound):
        retry.call(fatal, retry.RetryPolicy(), what="x", sleep=lambda s: None)
    assert len(calls) == 1


def test_error_dict_is_json_safe_and_flags_retryable():
    assert ServerError("x", status=502, path="/p").to_dict() == {
        "error": "ServerError", "message": "x", "status": 502, "code": None, "path": "/p", "retryable": True}

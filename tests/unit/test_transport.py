"""The HTTP transport against real local servers: redirects, credentials, proxies, pools, CA bundle."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import certifi
import pytest
import urllib3

from plaud.errors import NotFound
from plaud.transport import Transport, ca_bundle, proxy_for


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers from ``routes`` (path -> (status, headers, body)); records every request it gets."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a real API server
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    seen: list[dict[str, object]] = []

    def handle_one(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append({"method": self.command, "target": self.path, "headers": self.headers, "body": body})
        status, headers, answer = self.routes.get(self.path, (404, {}, b'{"code": "NOPE", "message": "no route"}'))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = handle_one

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def server(routes: dict[str, tuple[int, dict[str, str], bytes]]) -> Iterator[tuple[str, list[dict[str, object]]]]:
    handler = type("Handler", (Recorder,), {"routes": routes, "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_json_basic_auth_and_answers_round_trip():
    with server({"/token": (200, {"Content-Type": "application/json"}, b'{"access_token": "t"}')}) as (base, seen):
        response = Transport(user_agent="ua-test").request("POST", base + "/token", json={"user_id": "u1"},
                                                           auth=("client", "secret"))
    assert response.status == 200 and response.json() == {"access_token": "t"}
    sent = seen[0]
    assert sent["method"] == "POST" and json.loads(sent["body"]) == {"user_id": "u1"}
    assert sent["headers"]["Content-Type"] == "application/json" and sent["headers"]["User-Agent"] == "ua-test"
    assert sent["headers"]["Authorization"] == urllib3.make_headers(basic_auth="client:secret")["authorization"]


def test_an_error_answer_raises_its_class_with_the_server_s_code():
    with server({}) as (base, _), pytest.raises(NotFound) as info:
        Transport().request("GET", base + "/open/partner/ai/transcriptions/t1?sig=s3cr3t")
    assert info.value.code == "NOPE" and info.value.path == "/open/partner/ai/transcriptions/t1"


def test_redirects_are_followed_and_credentials_stay_on_their_origin():
    with server({"/audio.mp3": (200, {}, b"ID3 bytes")}) as (storage, storage_seen):
        routes = {"/same": (302, {"Location": "/moved"}, b""), "/moved": (200, {}, b"here"),
                  "/elsewhere": (307, {"Location": storage + "/audio.mp3"}, b"")}
        with server(routes) as (api, api_seen):
            transport = Transport()
            auth = {"Authorization": "Bearer user-token"}
            assert transport.request("GET", api + "/same", headers=auth).content == b"here"
            assert api_seen[-1]["headers"]["Authorization"] == "Bearer user-token"  # same origin: kept
            streamed = transport.request("GET", api + "/elsewhere", headers=auth, stream=True)
            assert streamed.raw.read(3, decode_content=True) == b"ID3"
            streamed.close()
    assert "Authorization" not in storage_seen[0]["headers"]


def test_a_post_redirected_by_303_becomes_a_get_and_a_caller_may_refuse_redirects():
    routes = {"/submit": (303, {"Location": "/result"}, b""), "/result": (200, {}, b"{}")}
    with server(routes) as (base, seen):
        transport = Transport()
        assert transport.request("POST", base + "/submit", json={"a": 1}).status == 200
        assert [(s["method"], s["target"], s["body"]) for s in seen] == [("POST", "/submit", b'{"a": 1}'),
                                                                          ("GET", "/result", b"")]
        kept = transport.request("POST", base + "/submit", data=b"x", allow_redirects=False)
        assert kept.status == 303 and kept.headers["Location"] == "/result" and len(seen) == 3


def test_the_proxy_environment_is_honoured_and_no_proxy_goes_direct(monkeypatch):
    with server({"http://api.plaud.example/x": (200, {}, b"via proxy")}) as (proxy, proxy_seen), \
            server({"/direct": (200, {}, b"direct")}) as (direct, direct_seen):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert proxy_for("http", "api.plaud.example") == proxy and proxy_for("http", "127.0.0.1") is None
        transport = Transport()
        assert transport.request("GET", "http://api.plaud.example/x").content == b"via proxy"
        assert transport.request("GET", direct + "/direct").content == b"direct"
    assert [s["target"] for s in proxy_seen] == ["http://api.plaud.example/x"]  # an absolute target: a proxy's
    assert [s["target"] for s in direct_seen] == ["/direct"]


def test_the_proxy_environment_is_read_once_per_origin(monkeypatch):
    import plaud.transport

    lookups: list[tuple[str, str]] = []
    monkeypatch.setattr(plaud.transport, "proxy_for", lambda scheme, host: lookups.append((scheme, host)))
    with server({"/a": (200, {}, b"a"), "/b?x=1": (200, {}, b"b")}) as (base, _):
        transport = Transport()
        transport.request("GET", base + "/a")
        transport.request("GET", base + "/b?x=1")
    assert lookups == [("http", "127.0.0.1")]


def test_https_is_checked_against_the_environment_s_bundle_else_certifi_s(monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert ca_bundle() == certifi.where()
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/curl.pem")
    assert ca_bundle() == "/etc/ssl/curl.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/our-ca.pem")
    assert ca_bundle() == "/etc/ssl/our-ca.pem"
    pool = Transport()._route("https://platform.plaud.ai/developer/api")
    assert pool.ca_certs == "/etc/ssl/our-ca.pem" and pool.cert_reqs == "CERT_REQUIRED"


def test_a_thread_pool_worker_keeps_a_connection_per_task_to_the_same_host():
    from workers.pools import THREADS_CONCURRENCY

    transport = Transport()
    for url in ("https://platform.plaud.ai/developer/api", "http://127.0.0.1:8080/"):
        # A smaller pool drops each extra connection after its request, and the next opens anew.
        assert transport._route(url).pool.maxsize >= THREADS_CONCURRENCY


def test_a_pool_the_manager_closed_for_other_origins_is_opened_again_and_nothing_is_lost():
    with server({"/a": (200, {}, b"a")}) as (base, seen):
        transport = Transport()
        assert transport.request("GET", base + "/a").content == b"a"
        pool = transport._route(base + "/a")
        transport._direct.pools.clear()  # evicted, and closed as some urllib3 releases do
        pool.close()
        assert transport.request("GET", base + "/a").content == b"a"
    assert len(seen) == 2

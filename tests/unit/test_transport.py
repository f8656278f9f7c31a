"""The HTTP transport against real local servers: redirects, credentials, proxies, pools, CA bundle."""

from __future__ import annotations

import base64
import gzip
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import certifi
import pytest
import urllib3

from plaud.errors import FatalError, NotFound
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


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_proxy_without_a_scheme_is_http_and_its_credentials_are_sent(monkeypatch):
    with server({"http://api.plaud.example/x": (200, {}, b"via proxy")}) as (proxy, seen):
        address = proxy.removeprefix("http://")
        monkeypatch.setenv("HTTP_PROXY", f"user:p%40ss@{address}")  # no scheme; a quoted '@' in the password
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert proxy_for("http", "api.plaud.example") == f"http://user:p%40ss@{address}"
        assert Transport().request("GET", "http://api.plaud.example/x").content == b"via proxy"
    assert seen[0]["headers"]["Proxy-Authorization"] == basic("user", "p@ss")


def test_no_proxy_may_name_a_network(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "storage.internal,10.0.0.0/8")
    assert proxy_for("http", "10.1.2.3") is None and proxy_for("http", "storage.internal") is None
    assert proxy_for("http", "11.1.2.3") == "http://proxy.internal:3128"
    assert proxy_for("http", "api.plaud.example") == "http://proxy.internal:3128"


def test_credentials_in_a_url_are_sent_as_basic_auth_and_never_quoted():
    with server({"/a.mp3": (200, {}, b"ID3")}) as (base, seen):
        url = base.replace("http://", "http://reader:s3cr%2Ft@") + "/a.mp3"
        assert Transport().request("GET", url).content == b"ID3"
        with pytest.raises(NotFound) as info:
            Transport().request("GET", url.replace("/a.mp3", "/missing.mp3"))
    assert seen[0]["headers"]["Authorization"] == basic("reader", "s3cr/t")
    assert "s3cr" not in str(info.value) and info.value.path == "/missing.mp3"


def test_a_url_or_a_redirect_with_an_impossible_port_is_a_fatal_error():
    with pytest.raises(FatalError):
        Transport().request("GET", "http://127.0.0.1:99999/x")
    with server({"/moved": (302, {"Location": "http://127.0.0.1:notaport/x"}, b"")}) as (base, _):
        with pytest.raises(FatalError):
            Transport().request("GET", base + "/moved")


def test_a_ca_bundle_directory_is_used_as_one(monkeypatch, tmp_path):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path))
    pool = Transport()._route("https://platform.plaud.ai/developer/api")
    assert pool.ca_cert_dir == str(tmp_path) and pool.ca_certs is None


def test_a_put_redirected_by_302_becomes_a_get_as_requests_did():
    routes = {"/part": (302, {"Location": "/elsewhere"}, b""), "/elsewhere": (200, {}, b"ok")}
    with server(routes) as (base, seen):
        assert Transport().request("PUT", base + "/part", data=b"bytes").content == b"ok"
    assert [(s["method"], s["body"]) for s in seen] == [("PUT", b"bytes"), ("GET", b"")]


def test_a_compressed_answer_is_asked_for_and_read():
    body = gzip.compress(json.dumps({"status": "SUCCESS"}).encode())
    with server({"/t1": (200, {"Content-Encoding": "gzip", "Content-Type": "application/json"}, body)}) as (base, seen):
        assert Transport().request("GET", base + "/t1").json() == {"status": "SUCCESS"}
    assert "gzip" in seen[0]["headers"]["Accept-Encoding"]

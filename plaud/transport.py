"""The one place that talks HTTP: every request has a timeout, every failure becomes a PlaudError.

Requests go through urllib3's connection pools directly. ``requests`` on top of it cost about
three times the client CPU per request (``bench.http_cpu``: 1.1-1.4 ms against 0.3-0.4 ms;
preparing and merging session settings, cookie jars, netrc and proxy lookups per call, typing
protocols checked on every argument): a recording makes five requests, and a worker's own CPU
per recording is the fleet's ceiling. What this
module keeps of what ``requests`` did for us: the proxy environment (``HTTPS_PROXY``,
``NO_PROXY``, ...), read once per origin; the CA bundle (``REQUESTS_CA_BUNDLE`` or
``CURL_CA_BUNDLE``, else certifi's); redirects, followed unless a caller says not to, with the
credentials dropped when the redirect leaves the origin.

urllib3 exceptions are translated here and nowhere else; HTTP statuses map to exception classes
in ``error_for_response``. Messages quote at most a short, redacted piece of the body.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

import certifi
import urllib3
import urllib3.exceptions
from urllib3.util.ssl_match_hostname import CertificateError as HostnameMismatch

from .errors import (
    AuthError,
    BadRequest,
    FatalError,
    NotFound,
    PlaudConnectionError,
    PlaudError,
    PlaudTimeout,
    RateLimited,
    ServerError,
)
from .redact import redact

log = logging.getLogger("plaud.http")

BODY_EXCERPT_CHARS = 300
_XML_FIELD = re.compile(r"<(Code|Message)>([^<]*)</\1>")
MAX_REDIRECTS = 30  # as requests allowed
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers that must not follow a redirect to another origin (scheme, host or port).
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
# Connections kept per host. A thread-pool worker runs 16 tasks at once (and an upload sends parts
# in parallel); a smaller pool drops each extra connection after its request and opens anew.
CONNECTIONS_PER_HOST = 32
MAX_ORIGINS = 256  # presigned part URLs may come from a few storage hosts; never an unbounded cache


@dataclass
class Response:
    """A 2xx/3xx answer. ``raw`` is urllib3's response: read from it when the request streamed."""

    status: int
    headers: Mapping[str, str]
    raw: Any

    @property
    def content(self) -> bytes:
        return self.raw.data

    def json(self) -> Any:
        return json.loads(self.content)

    def close(self) -> None:
        """Give a streamed response's connection back (or drop it when the body was not read to the end)."""
        self.raw.close()
        self.raw.release_conn()


def ca_bundle() -> str:
    """The CA certificates HTTPS is checked against: the environment's bundle (a file or a
    directory), else certifi's."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()


def proxy_for(scheme: str, host: str) -> str | None:
    """The proxy the environment names for this origin (``<scheme>_proxy``, else ``all_proxy``),
    unless ``no_proxy`` exempts the host: by name or suffix as urllib reads it, or by a network
    (``10.0.0.0/8``) that holds the host's address, as requests read it. A proxy given without a
    scheme is an http one, as requests took it."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(host) or _in_no_proxy_network(host, proxies.get("no", "")):
        return None
    return proxy if "://" in proxy else "http://" + proxy


def _in_no_proxy_network(host: str, no_proxy: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in no_proxy.replace(" ", "").split(","):
        if "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def _proxy_manager(proxy: str, pool_settings: dict[str, Any]) -> urllib3.ProxyManager:
    """A manager for ``proxy``; credentials in its URL go as Proxy-Authorization, as requests sent them."""
    parts = urlsplit(proxy)
    headers = None
    if parts.username:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers = urllib3.make_headers(proxy_basic_auth=credentials)
    return urllib3.ProxyManager(proxy, proxy_headers=headers, **pool_settings)


def _tls_settings() -> dict[str, Any]:
    bundle = ca_bundle()
    where = {"ca_cert_dir": bundle} if os.path.isdir(bundle) else {"ca_certs": bundle}
    return {"cert_reqs": "CERT_REQUIRED", **where}


class Transport:
    def __init__(self, *, connect_timeout_s: float = 5.0, read_timeout_s: float = 30.0,
                 user_agent: str = "plaud-workers") -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.user_agent = user_agent
        self._pool_settings: dict[str, Any] = {"maxsize": CONNECTIONS_PER_HOST, "retries": False, **_tls_settings()}
        self._direct = urllib3.PoolManager(num_pools=MAX_ORIGINS, **self._pool_settings)
        self._proxied: dict[str, urllib3.ProxyManager] = {}
        # Per origin: the connection pool to use, or the proxy manager that reaches it.
        self._routes: dict[tuple[str, str, int | None], urllib3.HTTPConnectionPool | urllib3.ProxyManager] = {}
        self._timeouts: dict[float, urllib3.Timeout] = {}

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, json: Any = None,
                data: bytes | None = None, auth: tuple[str, str] | None = None, stream: bool = False,
                allow_redirects: bool = True, read_timeout_s: float | None = None) -> Response:
        """Send one request; returns a 2xx/3xx response or raises the matching PlaudError.

        ``json`` is sent as a JSON body, ``data`` as it is; ``auth`` as HTTP Basic credentials.
        With ``stream`` the body stays unread: read ``response.raw``, then ``close()`` it.
        """
        # What requests sent by default: a server may compress (urllib3 decodes it).
        sent_headers = {"User-Agent": self.user_agent, "Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
        if headers:
            sent_headers.update(headers)
        body = data
        if json is not None:
            body = _json_body(json)
            sent_headers["Content-Type"] = "application/json"
        path = urlsplit(url).path
        url, user_info = _without_user_info(url)
        if auth is None and user_info is not None and "Authorization" not in sent_headers:
            auth = user_info  # credentials in the URL, as requests sent them
        if auth is not None:
            sent_headers["Authorization"] = urllib3.make_headers(basic_auth=f"{auth[0]}:{auth[1]}")["authorization"]
        timeout = self._timeout(read_timeout_s or self.read_timeout_s)
        for _ in range(MAX_REDIRECTS + 1):
            raw = self._send(method, url, body, sent_headers, timeout, stream=stream, path=path)
            location = raw.headers.get("Location") if allow_redirects else None
            if raw.status not in REDIRECT_STATUSES or not location:
                break
            raw.drain_conn()
            raw.release_conn()
            target, _ = _without_user_info(urljoin(url, location))
            if _origin(target, path) != _origin(url, path):
                sent_headers = {k: v for k, v in sent_headers.items() if k.lower() not in CREDENTIAL_HEADERS}
            if method != "HEAD" and (raw.status in (302, 303) or (raw.status == 301 and method == "POST")):
                method, body = "GET", None  # what browsers (and requests) do
                sent_headers.pop("Content-Type", None)
            url, path = target, urlsplit(target).path
        else:
            raise PlaudConnectionError(f"more than {MAX_REDIRECTS} redirects", path=path, request_sent=True)
        if raw.status >= 400:
            try:
                text = (raw.read() if stream else raw.data).decode("utf-8", errors="replace")
            except urllib3.exceptions.HTTPError:
                text = ""  # the error body was cut off: the status still says what happened
            finally:
                raw.release_conn()
            error = error_for_response(raw.status, raw.headers, text, path)
            log.debug("%s %s -> %s %s", method, path, raw.status, error.code or "")
            raise error
        return Response(raw.status, raw.headers, raw)

    def _send(self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: urllib3.Timeout,
              *, stream: bool, path: str) -> Any:
        try:
            try:
                return self._open(method, url, body, headers, timeout, stream=stream)
            except urllib3.exceptions.ClosedPoolError:
                # The pool manager evicted this origin's pool to make room for others (it keeps
                # MAX_ORIGINS) and closed it, as some urllib3 releases do (urllib3 issue 1252):
                # nothing was sent. Forget the routes, and open a new pool.
                self._routes.clear()
                return self._open(method, url, body, headers, timeout, stream=stream)
        except urllib3.exceptions.HTTPError as exc:
            raise translated(exc, path) from None

    def _open(self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: urllib3.Timeout,
              *, stream: bool) -> Any:
        route = self._route(url)
        if isinstance(route, urllib3.HTTPConnectionPool):
            parts = urlsplit(url)
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            return route.urlopen(method, target, body=body, headers=headers, timeout=timeout, retries=False,
                                 redirect=False, assert_same_host=False, preload_content=not stream)
        return route.urlopen(method, url, body=body, headers=headers, timeout=timeout, retries=False,
                             redirect=False, preload_content=not stream)

    def _route(self, url: str) -> urllib3.HTTPConnectionPool | urllib3.ProxyManager:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise urllib3.exceptions.LocationValueError(f"not an http(s) URL with a host: {scheme or 'no scheme'}")
        key = (scheme, parts.hostname, _port(parts))
        route = self._routes.get(key)
        if route is None:
            if len(self._routes) >= MAX_ORIGINS:
                self._routes.clear()
            proxy = proxy_for(scheme, parts.hostname)
            if proxy is None:
                route = self._direct.connection_from_host(parts.hostname, _port(parts), scheme)
            else:
                route = self._proxied.get(proxy)
                if route is None:
                    route = self._proxied[proxy] = _proxy_manager(proxy, self._pool_settings)
            self._routes[key] = route
        return route

    def _timeout(self, read_timeout_s: float) -> urllib3.Timeout:
        timeout = self._timeouts.get(read_timeout_s)
        if timeout is None:
            timeout = self._timeouts[read_timeout_s] = urllib3.Timeout(connect=self.connect_timeout_s,
                                                                       read=read_timeout_s)
        return timeout


def _json_body(value: Any) -> bytes:
    return json.dumps(value).encode()


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:  # out of range, or not a number
        raise urllib3.exceptions.LocationValueError("the URL's port is not a port number") from None


def _origin(url: str, path: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    try:
        return parts.scheme.lower(), parts.hostname, _port(parts)
    except urllib3.exceptions.LocationValueError as exc:
        raise translated(exc, path) from None


def _without_user_info(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without ``user:password@``, and those credentials (unquoted) if it had them."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    credentials = (unquote(parts.username or ""), unquote(parts.password or ""))
    return parts._replace(netloc=host).geturl(), credentials


def translated(exc: urllib3.exceptions.HTTPError, path: str) -> PlaudError:
    """What a failed request means for the caller: never connected, timed out, or lost on the way."""
    if isinstance(exc, urllib3.exceptions.ProxySchemeUnknown):
        return FatalError("the proxy environment names a proxy that is not http(s)", path=path)
    if isinstance(exc, urllib3.exceptions.LocationValueError):
        return FatalError(f"invalid URL: {type(exc).__name__}", path=path)
    # Order matters: urllib3 makes a refused or unresolvable connection a kind of connect timeout.
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return PlaudConnectionError("could not connect", path=path, request_sent=False)
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return PlaudTimeout("connecting timed out", path=path, request_sent=False)
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return PlaudTimeout("no response in time", path=path, request_sent=True)
    if isinstance(exc, urllib3.exceptions.ProxyError):
        return PlaudConnectionError("the proxy refused or dropped the connection", path=path, request_sent=False)
    if isinstance(exc, urllib3.exceptions.SSLError):
        if _certificate_refused(exc):  # during the handshake: nothing of the request left this host
            return PlaudConnectionError("the server's TLS certificate was refused", path=path, request_sent=False)
        return PlaudConnectionError("the TLS connection failed", path=path, request_sent=True)
    return PlaudConnectionError("the connection was closed before a response arrived", path=path, request_sent=True)


def _certificate_refused(exc: urllib3.exceptions.SSLError) -> bool:
    """Whether TLS failed on the certificate check. Any other TLS error (a broken record while the
    answer was read) may come after the request was sent: a submit must not be retried for it."""
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, (ssl.SSLCertVerificationError, HostnameMismatch))


def error_for_response(status: int, headers: Any, body: str, path: str) -> PlaudError:
    """Map an HTTP error answer to its exception class; the one place that decides."""
    code, message = _parse_error_body(body)
    message = redact(message or f"HTTP {status}")
    kwargs: dict[str, Any] = {"status": status, "code": code, "path": path}
    if status == 429:
        return RateLimited(message, retry_after_s=_retry_after(headers), **kwargs)
    if status >= 500:
        return ServerError(message, retry_after_s=_retry_after(headers), **kwargs)
    if status in (401, 403):
        return AuthError(message, **kwargs)
    if status == 404:
        return NotFound(message, **kwargs)
    return BadRequest(message, **kwargs)


def _parse_error_body(body: str) -> tuple[str | None, str | None]:
    text = (body or "").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            code = data.get("code")
            message = next((data[k] for k in ("message", "detail", "error", "msg") if isinstance(data.get(k), str)),
                           None)
            return (str(code) if code is not None else None), message
    if text.startswith("<"):
        fields = dict(_XML_FIELD.findall(text))
        if fields:
            return fields.get("Code"), fields.get("Message")
    return None, text[:BODY_EXCERPT_CHARS] or None


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to our own backoff

"""Where Redis is: Celery's Sentinel list parsed, the settings that go with it, and the one connection factory.

The failover itself, with real Sentinels, is tests/integration/test_sentinel_failover.py.
"""

from __future__ import annotations

import time

import pytest
import redis
from redis.sentinel import Sentinel, SentinelConnectionPool

from plaud.errors import ConfigError
from plaud.redact import mask_url_passwords, redact
from tasks.redis_connection import READ_BUFFER_BYTES, celery_transport_options, connect
from tasks.redis_urls import SentinelUrl, is_sentinel_url, parse_sentinel_url
from tasks.settings import PipelineSettings

SENTINELS = "sentinel://:redis%2Fpw@s1:26379/2;sentinel://s2:26380/2;sentinel://s3:26381"


def sentinel_settings(**env: str) -> PipelineSettings:
    return PipelineSettings.from_env({"REDIS_URL": SENTINELS, "PLAUD_SENTINEL_MASTER": "mymaster", **env})


# -- the URL -------------------------------------------------------------------------------------

def test_a_sentinel_list_names_every_sentinel_and_the_masters_login():
    parsed = parse_sentinel_url(SENTINELS)
    assert parsed == SentinelUrl((("s1", 26379), ("s2", 26380), ("s3", 26381)), db=2, password="redis/pw")
    assert parse_sentinel_url("sentinel://u:p@h:1/0;").username == "u"  # a trailing ';' is harmless
    assert "redis/pw" not in repr(parsed)
    assert is_sentinel_url(" SENTINEL://h:1") and not is_sentinel_url("redis://sentinel:6379/0")


@pytest.mark.parametrize("url, says", [
    ("sentinel://:pw@h:1/0;redis://:pw@h:2/0", "mixes sentinel:// with other addresses"),
    ("sentinel://:pw@h:port/0", "bad port"),
    ("sentinel://:pw@h1:26379/0;sentinel://h2/0", "give every Sentinel its port"),
    ("sentinel://:pw@:26379/0", "without a host"),
    ("sentinel://:pw@h:1/zero", "the database must be a number"),
    ("sentinel://:pw@h:1/0;sentinel://:other-pw@h:2/0", "different Redis logins"),
    ("sentinel://:pw@h:1/1;sentinel://h:2/3", "different databases"),
    (";", "names no Sentinel"),
])
def test_a_bad_sentinel_list_is_refused_naming_its_variable_and_never_its_password(url, says):
    with pytest.raises(ConfigError) as caught:
        parse_sentinel_url(url, "CELERY_BROKER_URL")
    assert says in str(caught.value) and "CELERY_BROKER_URL" in str(caught.value)
    assert "pw@" not in str(caught.value)


def test_url_passwords_are_masked_in_text_and_in_redacted_logs():
    text = "broker sentinel://:s3cret@h1:26379/0;sentinel://user:s3cret@h2:26379/0 and redis://:s3cret@h:6379/0"
    assert "s3cret" not in mask_url_passwords(text) and "s3cret" not in redact(text)
    assert mask_url_passwords("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url_passwords("redis://h:6379/0 https://files.example.com/a@b") == \
        "redis://h:6379/0 https://files.example.com/a@b"


# -- the settings -------------------------------------------------------------------------------

@pytest.mark.parametrize("variable", ["REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"])
def test_a_sentinel_list_without_the_masters_name_stops_at_start(variable):
    with pytest.raises(ConfigError, match=f"{variable} is a list of Sentinels: set PLAUD_SENTINEL_MASTER"):
        PipelineSettings.from_env({variable: SENTINELS})


def test_a_bad_sentinel_list_stops_at_start():
    with pytest.raises(ConfigError, match="REDIS_URL has a bad port"):
        PipelineSettings.from_env({"REDIS_URL": "sentinel://h:x/0", "PLAUD_SENTINEL_MASTER": "m"})


def test_the_sentinel_password_is_read_from_a_file_and_never_shown(tmp_path):
    secret = tmp_path / "sentinel-password"
    secret.write_text("sentinel-pw-from-file\n")
    settings = sentinel_settings(PLAUD_SENTINEL_PASSWORD_FILE=str(secret))
    assert settings.sentinel_password == "sentinel-pw-from-file"
    assert "sentinel-pw-from-file" not in repr(settings)
    with pytest.raises(ConfigError, match="set PLAUD_SENTINEL_PASSWORD or PLAUD_SENTINEL_PASSWORD_FILE, not both"):
        sentinel_settings(PLAUD_SENTINEL_PASSWORD="x", PLAUD_SENTINEL_PASSWORD_FILE=str(secret))


# -- the connection factory ---------------------------------------------------------------------

def test_a_plain_url_connects_as_before():
    client = connect(PipelineSettings.from_env({"REDIS_URL": "redis://:pw@h:6390/3",
                                                "PLAUD_REDIS_SOCKET_TIMEOUT_S": "2.5"}))
    kwargs = client.connection_pool.connection_kwargs
    assert type(client.connection_pool) is redis.ConnectionPool
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("h", 6390, 3, "pw")
    assert kwargs["socket_timeout"] == 2.5 and kwargs["socket_connect_timeout"] == 5.0
    assert kwargs["health_check_interval"] == 30


def test_a_sentinel_list_gives_a_client_of_the_master_with_both_passwords_kept_apart():
    settings = sentinel_settings(PLAUD_SENTINEL_PASSWORD="sentinel-pw", PLAUD_REDIS_SOCKET_TIMEOUT_S="2.5",
                                 PLAUD_REDIS_CONNECT_TIMEOUT_S="1.5")
    client = connect(settings)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.is_master and pool.service_name == "mymaster"
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"]) == (2, "redis/pw")  # the master's, from the URL
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (2.5, 1.5)
    manager: Sentinel = pool.sentinel_manager
    asked = [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
             for s in manager.sentinels]
    assert asked == [("s1", 26379), ("s2", 26380), ("s3", 26381)]
    for sentinel in manager.sentinels:  # the Sentinels' own password, and the same timeouts
        sentinel_kwargs = sentinel.connection_pool.connection_kwargs
        assert sentinel_kwargs["password"] == "sentinel-pw"
        assert (sentinel_kwargs["socket_timeout"], sentinel_kwargs["socket_connect_timeout"]) == (2.5, 1.5)
        assert sentinel_kwargs["socket_read_size"] == READ_BUFFER_BYTES


def test_without_a_sentinel_password_the_sentinels_are_asked_without_one():
    manager = connect(sentinel_settings()).connection_pool.sentinel_manager
    assert all(s.connection_pool.connection_kwargs.get("password") is None for s in manager.sentinels)


def test_the_master_client_runs_commands_and_lua_scripts_where_the_sentinels_point(redis_server, monkeypatch):
    """Only the Sentinels' answer is stubbed: the client then talks to a real redis-server."""
    asked = []

    def discover_master(self, service_name):
        asked.append(service_name)
        return "127.0.0.1", redis_server.port

    monkeypatch.setattr(Sentinel, "discover_master", discover_master)
    settings = PipelineSettings.from_env({"REDIS_URL": "sentinel://127.0.0.1:1/5",
                                          "PLAUD_SENTINEL_MASTER": "mymaster"})
    client = connect(settings)
    incr = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert incr(keys=["plaud:test:counter"], args=[3]) == 3 and incr(keys=["plaud:test:counter"], args=[4]) == 7
    assert asked and set(asked) == {"mymaster"}
    plain = redis.Redis(port=redis_server.port, db=5)
    assert plain.get("plaud:test:counter") == b"7"  # in the URL's database
    plain.delete("plaud:test:counter")


# -- the read buffer -------------------------------------------------------------------------------

def read_buffer_bytes(pool: redis.ConnectionPool) -> int:
    """The buffer a connection of this pool reads replies into, on a connection really opened."""
    connection = pool.get_connection()
    try:
        connection.connect()
        return len(connection._parser._buffer)  # redis-py allocates and zero-fills it per connection
    finally:
        pool.release(connection)


def test_every_connection_a_worker_opens_reads_into_the_small_buffer(redis_server, monkeypatch):
    """Ours, the result backend's and kombu's channels, the consumer's too: redis-py's default is
    64 KiB each, about 2 MiB over a warm thread-pool worker's connections."""
    from workers import broker_transport
    from workers.celery_app import make_app
    from workers.result_backend import RedisBackend

    assert READ_BUFFER_BYTES < redis.connection.DEFAULT_SOCKET_READ_SIZE
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    settings = PipelineSettings.from_env()
    assert read_buffer_bytes(connect(settings).connection_pool) == READ_BUFFER_BYTES
    app = make_app(settings)
    backend = app.backend
    assert isinstance(backend, RedisBackend) and backend.url == redis_server.url
    assert read_buffer_bytes(backend.client.connection_pool) == READ_BUFFER_BYTES
    backend.set("plaud:test:result", b"stored")  # and it still works as Celery's backend
    assert backend.get("plaud:test:result") == b"stored"
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker_transport.Channel)
        assert read_buffer_bytes(channel.pool) == READ_BUFFER_BYTES
        assert read_buffer_bytes(channel.async_pool) == READ_BUFFER_BYTES


def test_a_workers_threads_share_one_result_backend():
    """Celery builds a backend per thread unless told it is thread-safe: 16 threads were 16 clients,
    pools and sets of connections."""
    import threading

    from workers.celery_app import make_app

    app = make_app()
    backend = app.backend  # as a worker's main thread does before its pool's threads run tasks
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(app.backend)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 4 and all(other is backend for other in seen)


def test_through_sentinels_the_master_and_the_sentinels_are_read_with_the_small_buffer():
    from workers import broker_transport
    from workers.celery_app import make_app
    from workers.result_backend import SentinelBackend

    backend = make_app(sentinel_settings()).backend
    assert isinstance(backend, SentinelBackend)
    sentinel = backend._get_sentinel_instance(**backend.connparams)
    assert sentinel.connection_kwargs["socket_read_size"] == READ_BUFFER_BYTES  # the master's connections
    assert all(s.connection_pool.connection_kwargs["socket_read_size"] == READ_BUFFER_BYTES
               for s in sentinel.sentinels)  # the connections to the Sentinels themselves
    ours = connect(sentinel_settings()).connection_pool
    assert ours.connection_kwargs["socket_read_size"] == READ_BUFFER_BYTES
    assert all(s.connection_pool.connection_kwargs["socket_read_size"] == READ_BUFFER_BYTES
               for s in ours.sentinel_manager.sentinels)
    # kombu's Sentinel channel reads its master's connections through the same override.
    assert broker_transport.SentinelChannel._connparams is broker_transport.SharedClient._connparams


# -- Celery -------------------------------------------------------------------------------------

def test_celery_gets_the_master_name_and_the_sentinels_password_for_a_sentinel_list():
    from celery.backends.redis import SentinelBackend

    from workers.celery_app import make_app

    settings = sentinel_settings(PLAUD_SENTINEL_PASSWORD="sentinel-pw")
    expected = {"master_name": "mymaster",
                "sentinel_kwargs": {"socket_timeout": 5.0, "socket_connect_timeout": 5.0,
                                    "socket_read_size": READ_BUFFER_BYTES, "password": "sentinel-pw"}}
    assert celery_transport_options(settings, SENTINELS) == expected
    assert celery_transport_options(settings, "redis://h:6379/0") == {}
    app = make_app(settings)
    assert app.conf.broker_transport_options == {"visibility_timeout": 14400, "socket_timeout": 5.0,
                                                 "socket_connect_timeout": 5.0, "socket_keepalive": True, **expected}
    assert app.conf.result_backend_transport_options == expected
    # Kombu's Sentinel transport (with one client per pool: workers/broker_transport.py).
    from kombu.transport.redis import SentinelTransport

    connection = app.connection_for_write()
    assert issubclass(connection.transport.__class__, SentinelTransport)
    backend = app.backend
    assert isinstance(backend, SentinelBackend)
    # What Celery's backend builds from it (no connection is opened): the same Sentinels and passwords.
    sentinel = backend._get_sentinel_instance(**backend.connparams)
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinel.sentinels] == [26379, 26380, 26381]
    assert sentinel.sentinels[0].connection_pool.connection_kwargs["password"] == "sentinel-pw"
    assert sentinel.connection_kwargs["password"] == "redis/pw" and backend.connparams["db"] == 2
    # What a worker's `celery inspect conf` (and Flower's worker page) shows: no password.
    from celery.app.utils import filter_hidden_settings

    shown = repr(filter_hidden_settings(dict(app.conf)))
    assert "sentinel-pw" not in shown and "redis/pw" not in shown and "redis%2Fpw" not in shown


# -- riding out a failover ------------------------------------------------------------------------

def test_a_write_that_must_survive_is_tried_again_while_redis_does_not_answer(monkeypatch):
    from tasks import redis_connection

    monkeypatch.setattr(redis_connection, "FAILOVER_RETRY_GAP_S", 0.01)
    failures = [redis.ConnectionError("Connection refused"), redis.TimeoutError("Timeout reading from socket")]

    def save():
        if failures:
            raise failures.pop(0)
        return "saved"

    assert redis_connection.through_failover(save, wait_s=5, what="saving") == "saved" and not failures


def test_it_gives_up_after_the_wait_and_never_retries_other_errors(monkeypatch):
    from tasks import redis_connection

    monkeypatch.setattr(redis_connection, "FAILOVER_RETRY_GAP_S", 0.01)
    calls = []

    def down():
        calls.append(1)
        raise redis.ConnectionError("No master found for 'mymaster'")

    started = time.monotonic()
    with pytest.raises(redis.ConnectionError, match="No master found"):
        redis_connection.through_failover(down, wait_s=0.2, what="saving")
    assert 0.15 < time.monotonic() - started < 2 and len(calls) > 3

    def wrong():
        calls.append(2)
        raise redis.ResponseError("WRONGTYPE")

    with pytest.raises(redis.ResponseError):
        redis_connection.through_failover(wrong, wait_s=5, what="saving")
    assert calls.count(2) == 1

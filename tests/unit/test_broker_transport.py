"""The broker transport: kombu's Redis channel, but one synchronous client per connection pool."""

from __future__ import annotations

import threading
import time

import pytest
from kombu import Connection, Exchange, Queue

from workers import broker_transport
from workers.celery_app import make_app


@pytest.mark.parametrize(("url", "chosen"), [
    ("redis://localhost:6379/0", "workers.broker_transport:Transport"),
    ("rediss://:pw@cache.example:6380/1?ssl_cert_reqs=required", "workers.broker_transport:Transport"),
    ("sentinel://s1:26379;sentinel://s2:26379", "workers.broker_transport:SentinelTransport"),
    ("amqp://guest@localhost//", None),
    ("memory://", None),
])
def test_each_redis_url_form_gets_its_transport_and_others_are_left_to_kombu(url, chosen):
    assert broker_transport.transport_for(url) == chosen


def test_the_app_publishes_through_it(monkeypatch, redis_server):
    monkeypatch.setenv("CELERY_BROKER_URL", redis_server.url)
    app = make_app()
    with app.connection_for_write() as connection:
        assert isinstance(connection.default_channel, broker_transport.Channel)


def test_a_channel_keeps_one_client_that_threads_share_and_messages_still_flow(redis_server):
    with Connection(redis_server.url, transport=broker_transport.transport_for(redis_server.url)) as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second  # kombu's own channel builds a new redis.Redis here, every call
        assert channel._create_client(asynchronous=True) is not first  # the consumer's stays kombu's
        queue = Queue(f"shared-client-{time.time_ns()}", Exchange("shared-client", type="direct"), routing_key="k")
        producer = connection.Producer(channel)
        for n in range(200):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key="k", declare=[queue])
        with connection.SimpleQueue(queue) as simple:
            messages = [simple.get(timeout=5) for _ in range(200)]
            assert sorted(m.payload["n"] for m in messages) == list(range(200))
            assert channel.client.hlen(channel.unacked_key) == 200  # delivered, not yet acknowledged

            # A thread pool's tasks acknowledge on the consumer's channel, each from its own thread:
            # every ack goes through the one shared client at once.
            errors: list[BaseException] = []

            def ack(batch: list) -> None:
                try:
                    for message in batch:
                        message.ack()
                except BaseException as exc:  # noqa: BLE001 (reported below)
                    errors.append(exc)

            threads = [threading.Thread(target=ack, args=(messages[i::4],)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == []
            assert channel.client.hlen(channel.unacked_key) == 0
            assert channel.client.zcard(channel.unacked_index_key) == 0


def test_a_channel_whose_pool_was_replaced_builds_a_client_for_the_new_one(redis_server):
    with Connection(redis_server.url, transport=broker_transport.transport_for(redis_server.url)) as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as before:
            pass
        channel._pool = None  # what kombu does when it drops its pools
        with channel.conn_or_acquire() as after:
            assert after is not before and after.connection_pool is channel.pool
            assert after.ping()

"""What Herald relies on inside channels-redis, daphne, autobahn and Twisted.

Speed was won by using these libraries' private parts (realtime/layer.py,
realtime/fastsend.py, realtime/handshake.py, realtime/shutdown.py). Their
versions are pinned in pyproject.toml; these tests fail, naming the part, when
an upgrade moves or changes one, before the delivery tests fail in ways that
are harder to read.
"""

import inspect

import pytest


def _parameters(fn):
    return list(inspect.signature(fn).parameters)


def test_channels_redis_layer_internals():
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1"], prefix="asgi")
    # group keys, as group_add writes them (layer.group_add_many)
    assert layer._group_key("g") == b"asgi:group:g"
    # which server a channel or group lives on, and its connection
    assert layer.consistent_hash("g") == 0 and layer.ring_size == 1
    assert _parameters(layer.connection) == ["index"]
    # copies of one message per channel, as group_send makes them
    # (layer.group_send_all)
    _, serialized, capacity = layer._map_channel_keys_to_connection(
        ["specific.abc!x"], {"type": "t"}
    )
    assert set(serialized) == set(capacity) == {"asgispecific.abc!"}
    # how a message is read back and how long receive blocks
    assert layer.deserialize(next(iter(serialized.values()))) == {
        "type": "t",
        "__asgi_channel__": ["specific.abc!x"],  # receive_many drops it
    }
    assert isinstance(layer.brpop_timeout, int)
    assert isinstance(layer.group_expiry, int) and isinstance(layer.expiry, int)


def test_channels_redis_group_send_script_is_the_one_copied():
    """layer._SEND_SCRIPT is channels-redis's group_send script, batched: the
    same capacity check and ZADD/EXPIRE per channel."""
    from channels_redis.core import RedisChannelLayer

    source = inspect.getsource(RedisChannelLayer.group_send)
    for step in ("ZCOUNT", "ZADD", "EXPIRE", "zremrangebyscore"):
        assert step in source, step


def test_daphne_internals():
    import daphne.server
    from daphne.http_protocol import HTTPFactory

    # fastsend.protocol_of recognises a socket's send by this name and shape
    assert daphne.server.Server.handle_reply.__name__ == "handle_reply"
    assert _parameters(daphne.server.Server.handle_reply) == [
        "self",
        "protocol",
        "message",
    ]
    # serve.py replaces the factory daphne builds in Server.run()
    assert daphne.server.HTTPFactory is HTTPFactory or issubclass(
        daphne.server.HTTPFactory, HTTPFactory
    )
    assert "HTTPFactory(" in inspect.getsource(daphne.server.Server.run)
    # shutdown.install runs before daphne's own trigger, which cancels apps
    assert "kill_all_applications" in inspect.getsource(daphne.server.Server.run)


def test_autobahn_internals():
    from autobahn.websocket.protocol import WebSocketProtocol, WebSocketServerFactory

    assert WebSocketProtocol.STATE_OPEN == 3  # fastsend.STATE_OPEN
    for name in ("sendPreparedMessage", "sendCloseFrame"):
        assert callable(getattr(WebSocketProtocol, name)), name
    assert "isReply" in _parameters(WebSocketProtocol.sendCloseFrame)
    # a prepared message's wire bytes, shared by every plain socket
    factory = WebSocketServerFactory()
    prepared = factory.prepareMessage(b'{"a":1}')
    assert isinstance(prepared.payloadHybi, bytes)
    assert prepared.payloadHybi.endswith(b'{"a":1}')
    # compression is detected through this attribute (None: off)
    source = inspect.getsource(WebSocketProtocol)
    assert "self._perMessageCompress" in source


@pytest.mark.parametrize(
    "attribute", ["dataBuffer", "offset", "_tempDataBuffer", "_tempDataLen", "TLS"]
)
def test_twisted_tcp_connection_internals(attribute):
    """fastsend.buffered and its direct writes read a connection's buffers."""
    from twisted.internet import _newtls
    from twisted.internet.abstract import FileDescriptor
    from twisted.internet.tcp import Connection

    known = set(vars(FileDescriptor)) | set(vars(Connection))
    for cls in Connection.__mro__:
        known |= set(vars(cls))
    source = inspect.getsource(FileDescriptor) + inspect.getsource(_newtls)
    assert attribute in known or f"self.{attribute}" in source

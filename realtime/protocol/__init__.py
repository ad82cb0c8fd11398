"""Supabase Realtime (Phoenix) wire protocol: pure framing, no Django.

The framing is described in docs/protocol.md §2.
"""

from .binary import ENCODING_JSON, ENCODING_RAW, encode_user_broadcast
from .codec import V1, V2, Codec, V1Codec, V2Codec, codec_for_vsn
from .frames import (
    ACCESS_TOKEN,
    BROADCAST,
    HEARTBEAT,
    MAX_FRAME_BYTES,
    PHOENIX_TOPIC,
    PHX_CLOSE,
    PHX_ERROR,
    PHX_JOIN,
    PHX_LEAVE,
    PHX_REPLY,
    POSTGRES_CHANGES,
    PRESENCE,
    PRESENCE_DIFF,
    PRESENCE_STATE,
    SYSTEM,
    Message,
    ProtocolError,
    close,
    error_frame,
    push,
    reply,
)

__all__ = [
    "ACCESS_TOKEN",
    "BROADCAST",
    "ENCODING_JSON",
    "ENCODING_RAW",
    "HEARTBEAT",
    "MAX_FRAME_BYTES",
    "PHOENIX_TOPIC",
    "PHX_CLOSE",
    "PHX_ERROR",
    "PHX_JOIN",
    "PHX_LEAVE",
    "PHX_REPLY",
    "POSTGRES_CHANGES",
    "PRESENCE",
    "PRESENCE_DIFF",
    "PRESENCE_STATE",
    "SYSTEM",
    "V1",
    "V2",
    "Codec",
    "Message",
    "ProtocolError",
    "V1Codec",
    "V2Codec",
    "close",
    "codec_for_vsn",
    "encode_user_broadcast",
    "error_frame",
    "push",
    "reply",
]

"""Server Dialback keys (XEP-0220 §2.1, XEP-0185 §3) — sans-IO: no gevent, socket or ssl.

A receiving server checks a dialback key by asking the originating domain's authoritative server
(``<db:verify/>``), so the key must be something only that server can compute, yet it needs no
state per stream. XEP-0185 §3 (recommended key generation)::

    key = HEX( HMAC-SHA256( HEX(SHA256(secret)), "Receiving Server" + " " + "Originating Server" + " " + "Stream ID" ) )

``secret`` is this server's dialback secret (random, kept in ``<data_dir>/s2s/dialback_secret``
by the transport, so keys stay valid across a restart of a single process and are the same for
every process sharing the data directory). Keys are compared in constant time.
"""
from __future__ import annotations

import hashlib
import hmac

DIALBACK_NS = "jabber:server:dialback"
FEATURE_NS = "urn:xmpp:features:dialback"  # XEP-0220 §2.4.1 stream feature
SECRET_BYTES = 32
MAX_KEY_LENGTH = 256  # a key is 64 hex digits; anything much longer is not one of ours


def key(secret: bytes, receiving: str, originating: str, stream_id: str) -> str:
    """XEP-0185 §3: the dialback key for a stream ``stream_id`` from ``originating`` to ``receiving``."""
    text = f"{receiving} {originating} {stream_id}".encode()
    return hmac.new(hashlib.sha256(secret).hexdigest().encode(), text, hashlib.sha256).hexdigest()


def valid(secret: bytes, receiving: str, originating: str, stream_id: str, candidate: str) -> bool:
    """Whether ``candidate`` is the key we would have sent (XEP-0220 §2.1.2, the authoritative
    server's check of a ``<db:verify/>``)."""
    candidate = (candidate or "").strip()
    if not candidate or len(candidate) > MAX_KEY_LENGTH or not stream_id:
        return False
    return hmac.compare_digest(key(secret, receiving, originating, stream_id).encode(),
                               candidate.encode(errors="replace"))

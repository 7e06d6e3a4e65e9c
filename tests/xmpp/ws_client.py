"""A hand-written XMPP-over-WebSocket client (RFC 7395) for tests: wsproto's client side on a
plain socket; it sends exactly the messages a test gives it and reads the server's back."""
from __future__ import annotations

import base64
import socket
import time
import xml.etree.ElementTree as ET

from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, Pong,
                            RejectConnection, RejectData, Request, TextMessage)

FRAMING_NS = "urn:ietf:params:xml:ns:xmpp-framing"
STREAM_NS = "http://etherx.jabber.org/streams"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
OPEN = f"<open xmlns='{FRAMING_NS}' to='example.org' version='1.0'/>"
CLOSE = f"<close xmlns='{FRAMING_NS}'/>"


class WsClient:
    """``accepted`` is the handshake's answer: wsproto's AcceptConnection, or RejectConnection
    (``status``, ``body`` then hold the HTTP answer)."""

    def __init__(self, server, subprotocols=("xmpp",), path: str = "/xmpp-websocket",
                 small_buffers: bool = False):
        if small_buffers:  # a slow reader, as test_slow_reader.py's: a 4 KB receive buffer, small segments
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1200)
            self.sock.settimeout(5)
            self.sock.connect(("127.0.0.1", server.http_port))
        else:
            self.sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.messages: list[str] = []  # complete text messages not yet read
        self.closed: CloseConnection | None = None  # the server's close frame
        self.eof = False
        self.pongs: list[bytes] = []
        self.rejected = False  # the whole refusal has been read
        self.accepted, self.status, self.body = None, None, b""
        self._text = ""
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target=path,
                                               subprotocols=list(subprotocols))))
        deadline = time.monotonic() + 5
        while self.accepted is None and self._pump(deadline):
            pass
        if isinstance(self.accepted, RejectConnection):
            while not self.rejected and self._pump(deadline):  # the answer's body, to its end
                pass

    def _pump(self, deadline: float) -> bool:
        """Read once and handle what arrived; False at EOF or the deadline."""
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            self.ws.receive_data(None)
        else:
            self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, (AcceptConnection, RejectConnection)):
                self.accepted = event
                self.status = getattr(event, "status_code", 101)
                self.rejected = isinstance(event, RejectConnection) and not event.has_body
            elif isinstance(event, Pong):
                self.pongs.append(bytes(event.payload))
            elif isinstance(event, RejectData):
                self.body += event.data
                self.rejected = event.body_finished
            elif isinstance(event, TextMessage):
                self._text += event.data
                if event.message_finished:
                    self.messages.append(self._text)
                    self._text = ""
            elif isinstance(event, CloseConnection) and self.closed is None:
                self.closed = event
                if not self.eof:
                    try:
                        self.sock.sendall(self.ws.send(event.response()))
                    except Exception:  # the server already went
                        pass
        return not self.eof

    def send(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def send_fragments(self, *parts: str) -> None:
        """One text message in several frames (RFC 6455 §5.4)."""
        for i, part in enumerate(parts):
            self.sock.sendall(self.ws.send(TextMessage(data=part, message_finished=i == len(parts) - 1)))

    def ping(self, payload: bytes, timeout: float = 5) -> bool:
        """A WebSocket ping (RFC 6455 §5.5.2); True once its pong came back."""
        self.sock.sendall(self.ws.send(Ping(payload=payload)))
        deadline = time.monotonic() + timeout
        while payload not in self.pongs and self._pump(deadline):
            pass
        return payload in self.pongs

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data=data)))

    def recv(self, timeout: float = 5) -> ET.Element | None:
        """The next message as an element; None if the server closed or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while not self.messages and self._pump(deadline):
            pass
        return ET.fromstring(self.messages.pop(0)) if self.messages else None

    def read_to_the_end(self, timeout: float = 10) -> list[ET.Element]:
        """Every complete message until the server closes the connection."""
        deadline = time.monotonic() + timeout
        while self._pump(deadline):
            pass
        assert self.eof, "the server did not close the connection"
        read, self.messages = [ET.fromstring(m) for m in self.messages], []
        return read

    def next(self, tag: str, timeout: float = 5) -> ET.Element:
        """The next message whose tag ends with ``tag`` (others before it are skipped)."""
        deadline = time.monotonic() + timeout
        while (element := self.recv(max(0.01, deadline - time.monotonic()))) is not None:
            if element.tag.endswith(tag):
                return element
        raise AssertionError(f"no {tag} before the server closed or {timeout} s passed")

    def stream_error(self, timeout: float = 5) -> str:
        """The condition of the stream error; then must come <close/>, the close frame and EOF."""
        error = self.next(f"{{{STREAM_NS}}}error", timeout)
        close = self.recv(timeout)
        assert close is not None and close.tag == f"{{{FRAMING_NS}}}close", close
        self.wait_closed(timeout)
        return error[0].tag.split("}")[1]

    def wait_closed(self, timeout: float = 5) -> None:
        """Read until the server has closed: a close frame (1000, RFC 6455 §7.4.1), then EOF."""
        deadline = time.monotonic() + timeout
        while self._pump(deadline):
            pass
        assert self.closed is not None and self.closed.code == 1000, self.closed
        assert self.eof

    def login(self, name: str, password: str, resource: str = "ws") -> str:
        """Open, SASL PLAIN, open again, bind: the full JID."""
        self.send(OPEN)
        self.next("}features")
        token = base64.b64encode(f"\0{name}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{token}</auth>")
        assert self.recv().tag == f"{{{SASL_NS}}}success"
        self.send(OPEN)
        self.next("}features")
        self.send("<iq type='set' id='b1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:"
                  f"ns:xmpp-bind'><resource>{resource}</resource></bind></iq>")
        return self.next("}iq").findtext(".//{urn:ietf:params:xml:ns:xmpp-bind}jid")

    def close(self) -> None:
        self.sock.close()

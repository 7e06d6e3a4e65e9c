"""The actors of the convergence scenarios: ``sipuserf``'s phone, the demo accounts, helpers.

The phone is two SIPp runs: a user agent client that registers and sends, and a user agent
server listening on the registered contact's port that receives.
"""
import socket

from convergence.testing import free_port
from sipp_runner import Sipp, register, reply, request

DOMAIN = "example.org"  # tests/conftest.py's
PHONE_PASSWORD = "phone-secret"
ACCOUNTS = {"convergence": "1", "sipuserf": PHONE_PASSWORD, "userc": "c"}
# SIPp 3.6 answers only the first challenge and knows only MD5: offer MD5 first.
SIP = {"digest_algorithms": ["MD5", "SHA-256"], "t1": 0.1, "min_expires": 1}


class Phone:
    """``sipuserf``'s SIP phone: ``contact`` is where its user agent server listens."""

    def __init__(self, sipp: Sipp):
        self.sipp = sipp
        self.port = free_port(socket.SOCK_DGRAM)
        self.contact = f"<sip:sipuserf@127.0.0.1:{self.port}>"
        self.runs = 0

    def _name(self, what: str) -> str:
        self.runs += 1
        return f"{self.runs:02d}-{what}"

    def register(self, expires: int = 300) -> None:
        self.sipp.run(self._name("register"), register(1, self.contact, expires),
                      user="sipuserf", password=PHONE_PASSWORD)

    def send(self, to: str, body: str, expect: int = 200, headers: tuple = (),
             domain: str = DOMAIN) -> str:
        """MESSAGE ``to`` at ``domain`` (digest after the 407); returns SIPp's log of the exchange."""
        def message(cseq, auth):
            return request("MESSAGE", cseq, f"sip:{to}@{domain}", auth=auth, body=body,
                           content_type="text/plain;charset=UTF-8", sender="sipuserf",
                           recipient=to, domain=DOMAIN, headers=headers)
        return self.sipp.run(self._name(f"message-{to}"),
                             message(1, False) + '  <recv response="407" auth="true"/>\n'
                             + message(2, True) + f'  <recv response="{expect}"/>\n',
                             user="sipuserf", password=PHONE_PASSWORD)

    def receive(self, answer: str = "200 OK"):
        """Start listening for one MESSAGE, answered with ``answer``; ``wait()`` gives the log."""
        name = self._name("incoming")
        process = self.sipp.start(name, '  <recv request="MESSAGE"/>\n' + reply(answer), self.port)
        return lambda: self.sipp.wait(name, process)


def sent_by(jid: str, kind: str = "available"):
    return lambda p: p["from"].bare == jid and p["type"] == kind


def call_id(log: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in log.splitlines()
                if line.startswith("Call-ID:"))


def received_messages(log: str) -> list[str]:
    return [block for block in log.split("message received") if "MESSAGE sip:" in block]


def condition(stanza) -> str:
    """The RFC 6120 §8.3.3 condition of an error stanza, read from its XML (slixmpp knows only
    the RFC 3920 set, which lacks policy-violation)."""
    error = stanza.xml.find("{jabber:client}error")
    names = (child.tag.split("}")[1] for child in error
             if child.tag.startswith("{urn:ietf:params:xml:ns:xmpp-stanzas}"))
    return next(name for name in names if name != "text")

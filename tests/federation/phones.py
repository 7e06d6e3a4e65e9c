"""A SIP phone of a federated server, played by SIPp: it registers with its own server and
writes to any address (a remote domain's user included) through it; ``receive`` is its user
agent server on the registered contact."""
import socket

from convergence.testing import free_port
from sipp_runner import Sipp, register, reply, request

# SIPp 3.6 answers only the first challenge and knows only MD5: offer MD5 first.
SIP = {"digest_algorithms": ["MD5", "SHA-256"], "t1": 0.1}


class FederatedPhone:
    def __init__(self, server, user: str, password: str, folder):
        folder.mkdir(parents=True, exist_ok=True)
        self.sipp = Sipp(server.sip_port, folder)
        self.user, self.password, self.domain = user, password, server.domain
        self.port = free_port(socket.SOCK_DGRAM)
        self.runs = 0

    def _name(self, what: str) -> str:
        self.runs += 1
        return f"{self.user}-{self.runs:02d}-{what}"

    def register(self) -> None:
        self.sipp.run(self._name("register"), register(1, f"<sip:{self.user}@127.0.0.1:{self.port}>", 300),
                      user=self.user, password=self.password)

    def send(self, to: str, body: str, expect: int = 200) -> str:
        """MESSAGE ``sip:<to>`` (``to`` is ``user@domain``, any domain), digest after the 407."""
        def message(cseq, auth):
            return request("MESSAGE", cseq, f"sip:{to}", auth=auth, body=body,
                           content_type="text/plain;charset=UTF-8", sender=self.user,
                           recipient=to.partition("@")[0], domain=self.domain)
        return self.sipp.run(self._name("message"),
                             message(1, False) + '  <recv response="407" auth="true"/>\n'
                             + message(2, True) + f'  <recv response="{expect}"/>\n',
                             user=self.user, password=self.password)

    def receive(self, answer: str = "200 OK"):
        """Listen for one MESSAGE, answered with ``answer``; the returned ``wait()`` gives the log."""
        name = self._name("incoming")
        process = self.sipp.start(name, '  <recv request="MESSAGE"/>\n' + reply(answer), self.port)
        return lambda: self.sipp.wait(name, process)

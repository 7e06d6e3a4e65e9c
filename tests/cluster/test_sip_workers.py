"""SIP over UDP with 2 workers (issue 14, docs/cluster.md): every worker listens on the UDP port
(SO_REUSEPORT); a phone (SIPp) whose REGISTER landed on one worker gets the MESSAGEs an XMPP user
of the other worker sends (handed to the binding's owner, which sends them), and each 200 is
matched by the owner's client transaction — also when the kernel gives the 200 to the other
worker (SIPp answers from its contact port, not from the port it registered from: another hash),
which hands it over Redis to the node its Via branch names. The phone's REGISTER removing its
binding (Expires: 0, from another SIPp port: either worker) removes it from its owner."""
from __future__ import annotations

import re

from .helpers import worker_of

DROPPED = re.compile(r"/(w\d) INFO convergence\.plugins\.sip\.registrar: SIP: a REGISTER removes .* node .*/(w\d) owns")
FORWARDED = re.compile(r"/(w\d) INFO convergence\.plugins\.sip\.server: SIP: a 200 response .* answers node .*/(w\d): handed")


def both(server, text: str, start: int) -> None:
    """Wait for two lines with ``text`` from output line ``start`` on (one per worker)."""
    first = server.process.wait_for(text, start=start)
    server.process.wait_for(text, start=server.process.output.index(first, start) + 1)


def owner_of(server, start: int) -> str:
    """The worker that took the phone's REGISTER (logged as its own ``sip`` binding) since
    output line ``start``; waits until the other worker learnt it too (``cluster``)."""
    server.process.wait_for("(cluster)", start=start)  # the owner published it: its line came first
    line = next(line for line in server.process.output[start:]
                if "registered sipuserf@" in line and " (sip)" in line)
    return re.search(r"/(w\d+) INFO", line).group(1)


def test_udp_phone_and_workers(convergence_server, cluster_table, xmpp_client, tmp_path):
    from actors import ACCOUNTS as DEMO, SIP, Phone
    from sipp_runner import Sipp

    t1 = 0.05  # Timer F (64·T1, RFC 3261 §17.1.2.2) reports an unmatched 200 as an error in 3.2 s
    server = convergence_server(DEMO, server={"workers": 2}, cluster=cluster_table, sip={**SIP, "t1": t1})
    server.process.wait_for("convergence serving")
    output = server.process.output
    assert sum("listening: UdpListener" in line for line in output) == 2  # both workers
    assert not any("not listening" in line for line in output)
    users = {}  # worker → a session of userc there
    for n in range(20):  # the kernel picks the worker (SO_REUSEPORT): one session on each
        user = xmpp_client(server, "userc", password=DEMO["userc"], resource=f"pc{n}")
        users.setdefault(worker_of(server, user.jid), user)
        if len(users) == 2:
            break
    else:
        raise AssertionError("20 connections all went to one worker")
    folder = tmp_path / "sipp"
    folder.mkdir()
    forwarded = dropped = []
    for n in range(24):  # until a 200 and a removal reached the other worker: the kernel hashes
        # each new source port to one of the two (1 in 2 each; 12 tries missed once in CI)
        phone = Phone(Sipp(server.sip_port, folder))  # a new contact port: a new hash for its 200s
        mark = len(output)
        phone.register()
        owner = owner_of(server, mark)
        sender = next(user for worker, user in users.items() if worker != owner)
        incoming = phone.receive()
        sender.send_message("sipuserf@" + server.domain, f"message {n}")
        assert f"message {n}" in incoming()  # handed to the owner, which sent it from the shared port
        mark = len(output)
        phone.register(expires=0)  # removed by whichever worker takes it
        both(server, "unregistered sipuserf@", mark)  # from its owner, then from the other
        forwarded = [m.groups() for m in map(FORWARDED.search, output) if m]
        dropped = [m.groups() for m in map(DROPPED.search, output) if m]
        if forwarded and dropped:
            break
    assert forwarded, "every 200 reached the worker that sent the MESSAGE: nothing handed over"
    assert all(receiver != owner for receiver, owner in forwarded)
    assert dropped, "every removal reached the binding's owner: nothing handed over"
    assert all(receiver != owner for receiver, owner in dropped)
    # every 200 was matched (handed over or not): no Timer F error came back to the senders
    first, second = users.values()
    first.none("message_error", wait=64 * t1 + 0.5)
    second.none("message_error", wait=0.1)  # its Timer F would have fired meanwhile too

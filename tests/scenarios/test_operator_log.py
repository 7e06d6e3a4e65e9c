"""What an operator reads at ``info`` (Prosody and Kamailio print the same): logins, logouts,
registrations and failed authentication with the source address — never a password or a body."""
import base64
from collections import Counter
import urllib.error
import urllib.request

import pytest

from actors import PHONE_PASSWORD
from scenario_kit import LoginFailed


def test_logins_registrations_and_failures_are_logged_without_secrets(demo, xmpp_client, phone):
    log = demo.process
    user = xmpp_client(demo, "convergence")
    log.wait_for(f"login {demo.jid('convergence', 'test')} (xmpp) from 127.0.0.1:")

    with pytest.raises(LoginFailed):
        xmpp_client(demo, "userc", password="guess-xmpp")
    log.wait_for("XMPP login failed from 127.0.0.1")

    request = urllib.request.Request(f"{demo.http_url}/api/roster", headers={
        "Authorization": "Basic " + base64.b64encode(b"userc:guess-http").decode()})
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(request, timeout=5)
    log.wait_for("HTTP login failed from 127.0.0.1 for 'userc'")

    phone.register()
    log.wait_for(f"registered {demo.jid('sipuserf')}/sip-")
    log.wait_for("(sip) from udp:127.0.0.1:")
    phone.register(expires=0)
    log.wait_for(f"unregistered {demo.jid('sipuserf')}/sip-")

    user.send_message(demo.jid("echo"), "a body nobody logs")
    user.next("message")
    user.disconnect()
    log.wait_for(f"logout {demo.jid('convergence', 'test')} (xmpp)")
    text = "".join(log.output)
    for secret in ("a body nobody logs", "guess-xmpp", "guess-http", PHONE_PASSWORD):
        assert secret not in text


def test_messages_routed_are_counted_in_one_line_per_interval(convergence_server, xmpp_client):
    server = convergence_server({"alice": "a"}, server={"stats_interval": 0.2})
    alice = xmpp_client(server, "alice")
    alice.send_message(server.jid("echo"), "one")  # delivered to echo, its answer to alice
    alice.send_message("nobody@example.org", "two")  # refused: no such account
    alice.next("message")
    counted, seen = Counter(), 0
    while counted != Counter(delivered=2, refused=1):  # the three may straddle two intervals
        line = server.process.wait_for("messages in the last 0.2 s:", start=seen)
        seen = server.process.output.index(line) + 1
        for part in line.split(": ")[-1].split(", "):
            n, outcome = part.split()
            counted[outcome] += int(n)
        assert counted <= Counter(delivered=2, refused=1), line

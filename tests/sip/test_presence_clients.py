"""SIP presence with stock clients against a real ``convergence serve``: SIPp scenarios and baresip's
``presence`` module on the SIP side, slixmpp on the XMPP side (issue 16, docs/sip.md "Presence").

- SIPp subscribes to the XMPP user: 407, 200 and a NOTIFY with PIDF ``open``; it then MESSAGEs the
  XMPP user, who changes to ``dnd`` with a status, and the next NOTIFY carries ``<rpid:busy/>`` and
  the note; SIPp unsubscribes and gets ``terminated``. Another subscription runs out (Expires 1)
  and ends with ``terminated;reason=timeout``.
- SIPp registers and PUBLISHes ``away`` with a note: the XMPP user sees that resource's
  ``<show/>``/``<status/>``; the PUBLISH that removes it (SIP-If-Match, Expires 0) makes it
  plain available again.
- baresip (Debian's 1.0, ``presence`` module, the contact marked ``;presence=p2p``) shows the XMPP
  user Online, Busy (``dnd``), Offline (``away``: baresip reads ``<rpid:away/>`` so) and Offline
  as the XMPP client changes or leaves; its ``/presence_offline`` and
  ``/presence_online`` PUBLISHes reach the XMPP user as the phone's resource going away and
  coming back.
- linphonec 5.1 (Debian's ``linphone-cli``) registers and adds the XMPP user as a friend: it shows
  Online, Busy and Away as the XMPP client changes. It subscribes to the friend's own address
  (not through its proxy), so the friend is given as ``sip:convergence@127.0.0.1:<port>`` (the
  demo domain is not in DNS).
"""
from __future__ import annotations

import os
import re
import socket
import time

import pytest

from convergence.testing import free_port
from sipp_runner import Sipp, register, request

from .test_stock_phones import (ACCOUNTS, PHONE, USER, Console, baresip, came_online,  # noqa: F401
                                require)

DOMAIN = "example.org"  # the scenario servers' (tests/scenario_kit.py)
OK = """  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
  ]]></send>
"""
PIDF_AWAY = ('<?xml version="1.0" encoding="UTF-8"?>'
             '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
             'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
             'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:sipuserf@example.org">'
             '<tuple id="t1"><status><basic>open</basic></status></tuple>'
             '<dm:person id="p1"><rpid:activities><rpid:away/></rpid:activities>'
             '<dm:note>back at 3</dm:note></dm:person></presence>')


@pytest.fixture
def demo(convergence_server):
    return convergence_server(ACCOUNTS, sip={"presence_min_expires": 1})


@pytest.fixture
def user(demo, xmpp_client):
    return xmpp_client(demo, USER, roster=True)


@pytest.fixture
def sipp(demo, tmp_path):
    folder = tmp_path / "sipp"
    folder.mkdir()
    return Sipp(demo.sip_port, folder)


def as_phone(**options):
    return {"user": PHONE, "password": ACCOUNTS[PHONE], **options}


def expect_notify(check: str = "", state: str = "") -> str:
    """Receive a NOTIFY (its body must match the regular expression ``check``, its
    Subscription-State start with ``state``) and answer 200."""
    actions = ""
    if check:
        actions += f'<ereg regexp="{check}" search_in="body" check_it="true" assign_to="b"/>'
    if state:
        actions += (f'<ereg regexp="^ *{state}" search_in="hdr" header="Subscription-State:" '
                    'check_it="true" assign_to="s"/>')
    action = f"<action>{actions}</action>" if actions else ""
    used = ",".join(name for name, what in (("b", check), ("s", state)) if what)
    reference = f'  <Reference variables="{used}"/>\n' if used else ""  # SIPp wants each used
    return f'  <recv request="NOTIFY">{action}</recv>\n' + OK + reference


def subscribe(cseq: int, expires: int, in_dialog: bool = False) -> str:
    """A SUBSCRIBE; in the dialog, its To tag is the one the 200 gave (``ACCEPTED`` keeps it:
    SIPp's ``[peer_tag_param]`` follows the last response, which may be another request's)."""
    text = request("SUBSCRIBE", cseq, "[next_url]" if in_dialog else f"sip:{USER}@{DOMAIN}",
                   auth=not in_dialog and cseq > 1, sender=PHONE,
                   recipient=USER, domain=DOMAIN,
                   headers=("Event: presence", f"Expires: {expires}",
                            "Accept: application/pidf+xml"))
    if in_dialog:
        text = text.replace(f"To: <sip:{USER}@{DOMAIN}>", f"To: <sip:{USER}@{DOMAIN}>[$tag]")
    return text


#: The 200 to the initial SUBSCRIBE: its To tag and Contact (the remote target) are kept.
ACCEPTED = ('  <recv response="200" rrs="true"><action><ereg regexp=";tag=[^;>]+" '
            'search_in="hdr" header="To:" check_it="true" assign_to="tag"/>'
            '</action></recv>\n')


def test_sipp_watches_an_xmpp_user(demo, user, sipp):
    require("sipp", "sip-tester")
    # SIPp keeps to one Call-ID per call: the MESSAGE shares it (outside the dialog: no To tag)
    ready = request("MESSAGE", 3, f"sip:{USER}@{DOMAIN}", sender=PHONE, recipient=USER,
                    domain=DOMAIN, content_type="text/plain", body="ready")
    ready_auth = request("MESSAGE", 4, f"sip:{USER}@{DOMAIN}", auth=True, sender=PHONE,
                         recipient=USER, domain=DOMAIN, content_type="text/plain", body="ready")
    scenario = (
        subscribe(1, 600) + '  <recv response="407" auth="true"/>\n'
        + subscribe(2, 600) + ACCEPTED
        + expect_notify(r"<basic>open</basic>", "active;expires=")
        + ready + '  <recv response="407" auth="true"/>\n' + ready_auth
        + '  <recv response="200"/>\n'
        + expect_notify(r"<rpid:busy/>.*in a meeting|in a meeting.*<rpid:busy/>", "active")
        + subscribe(5, 0, in_dialog=True) + '  <recv response="200"/>\n'
        + expect_notify(state="terminated;reason=timeout"))
    process = sipp.start("watch", scenario, free_port(socket.SOCK_DGRAM), **as_phone())
    message = user.next("message", match=lambda m: m["body"].strip() == "ready",
                        timeout=15)
    assert message["from"].bare == demo.jid(PHONE)
    user.call(lambda: user.xmpp.send_presence(pshow="dnd", pstatus="in a meeting"))
    log = sipp.wait("watch", process)
    assert "Subscription-State: terminated;reason=timeout" in log


def test_without_the_shared_roster_the_xmpp_user_is_asked(convergence_server, xmpp_client, tmp_path):
    """RFC 8048 §4: a SUBSCRIBE the roster does not allow yet gets 202 and a ``pending`` NOTIFY,
    and the XMPP user gets a presence subscription request from the phone's account; once she
    approves, the phone's subscription turns active and its NOTIFY shows her presence."""
    require("sipp", "sip-tester")
    server = convergence_server(ACCOUNTS, sip={"presence_min_expires": 1},
                                xmpp={"shared_roster": False})
    user = xmpp_client(server, USER, roster=True)
    sipp = Sipp(server.sip_port, tmp_path)
    scenario = (subscribe(1, 600) + '  <recv response="407" auth="true"/>\n'
                + subscribe(2, 600) + '  <recv response="202"/>\n'
                + expect_notify(state="pending")
                + expect_notify(r"<basic>open</basic>", "active;expires="))
    process = sipp.start("pending", scenario, free_port(socket.SOCK_DGRAM), **as_phone())
    asked = user.next("presence_subscribe", timeout=15)
    assert asked["from"] == server.jid(PHONE)
    user.call(lambda: user.xmpp.send_presence(pto=server.jid(PHONE), ptype="subscribed"))
    # a change of her presence makes the agent look at the roster again (else within 10 s)
    user.call(lambda: user.xmpp.send_presence(pstatus="approved"))
    sipp.wait("pending", process)


def test_sipp_subscription_expires(demo, user, sipp):
    require("sipp", "sip-tester")
    scenario = (subscribe(1, 1) + '  <recv response="407" auth="true"/>\n'
                + subscribe(2, 1) + '  <recv response="200"/>\n'
                + expect_notify(r"<basic>open</basic>", "active;expires=1")
                + expect_notify(state="terminated;reason=timeout"))
    sipp.run("expire", scenario, **as_phone())


def test_sipp_publish_reaches_the_xmpp_user(demo, user, sipp):
    require("sipp", "sip-tester")
    port = free_port(socket.SOCK_DGRAM)
    here = f"<sip:{PHONE}@127.0.0.1:{port}>"

    def publish(cseq, auth=False, body=PIDF_AWAY, headers=("Event: presence", "Expires: 600")):
        return request("PUBLISH", cseq, f"sip:{PHONE}@{DOMAIN}", auth=auth, sender=PHONE,
                       recipient=PHONE, domain=DOMAIN, body=body, headers=headers,
                       content_type="application/pidf+xml" if body else "")

    log = sipp.run("publish", register(1, here, 300).replace("sip:[service]@[remote_ip]",
                                                             f"sip:{PHONE}@{DOMAIN}")
                   + publish(3) + '  <recv response="407" auth="true"/>\n'
                   + publish(4, auth=True) + '  <recv response="200"/>\n',
                   port=port, **as_phone())
    online = user.next("presence", match=came_online(demo.jid(PHONE)), timeout=15)
    resource = online["from"]
    away = user.next("presence", match=lambda p: p["from"] == resource and p["show"] == "away",
                     timeout=15)
    assert away["status"] == "back at 3"
    etag = log.rsplit("SIP-ETag:", 1)[1].split()[0]

    remove = ("Event: presence", "Expires: 0", f"SIP-If-Match: {etag}")
    sipp.run("unpublish", publish(1, body="", headers=remove)
             + '  <recv response="407" auth="true"/>\n'
             + publish(2, auth=True, body="", headers=remove) + '  <recv response="200"/>\n',
             **as_phone())
    back = user.next("presence", match=lambda p: p["from"] == resource, timeout=15)
    assert back["type"] == "available" and back["show"] == "" and back["status"] == ""


# -- baresip's presence module --
def shows(phone, status: str, jid: str, timeout: float = 10) -> None:
    """Wait until baresip's contact list (``/contacts``) shows ``jid`` with ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        phone.command("/contacts")
        try:
            phone.expect(rf"{status}.*<sip:{re.escape(jid)}>", timeout=0.5)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_baresip_sees_the_xmpp_user_and_publishes(demo, user, baresip):
    phone = baresip(demo, f"{demo.jid(USER)};presence=p2p", apps=("presence",),
                    account=";pubint=60")
    contact = rf"<sip:{demo.jid(USER)}> changed status from "
    user.next("presence", match=came_online(demo.jid(PHONE)), timeout=10)
    shows(phone, "Online", demo.jid(USER))  # the first NOTIFY arrived (baresip prints no line)
    was = "Online"
    # baresip 1.0 reads <rpid:busy/> as Busy and <rpid:away/> as Offline (its subscriber.c)
    for show, shown in (("dnd", "Busy"), ("away", "Offline"), ("chat", "Online")):
        user.call(lambda: user.xmpp.send_presence(pshow=show))
        phone.expect(contact + rf"\S*{was}\S* to \S*{shown}", timeout=10)
        was = shown

    phone.command("/presence_offline")  # a PUBLISH with <basic>closed</basic>
    gone = user.next("presence", match=lambda p: p["from"].bare == demo.jid(PHONE)
                     and p["type"] == "unavailable", timeout=10)
    phone.command("/presence_online")
    back = user.next("presence", match=came_online(demo.jid(PHONE)), timeout=10)
    assert back["from"] == gone["from"]

    user.disconnect()
    phone.expect(contact + r"\S*Online\S* to \S*Offline", timeout=10)


# -- linphonec --
class Linphonec(Console):
    NAME = "linphonec"

    def __init__(self, home):
        (home / ".local" / "share" / "linphone").mkdir(parents=True)  # 5.1 crashes without it
        self.start(["linphonec"], env=dict(os.environ, HOME=str(home)))


def test_linphonec_sees_the_xmpp_user(demo, user, tmp_path):
    require("linphonec", "linphone-cli")
    phone = Linphonec(tmp_path / "home")
    try:
        phone.command(f"register sip:{PHONE}@{demo.domain} sip:127.0.0.1:{demo.sip_port} "
                      f"{ACCOUNTS[PHONE]}")
        user.next("presence", match=came_online(demo.jid(PHONE)), timeout=15)
        friend = rf'Friend "conv" <sip:{USER}@127\.0\.0\.1:{demo.sip_port}> is '
        phone.command(f"friend add conv sip:{USER}@127.0.0.1:{demo.sip_port}")
        phone.expect(friend + "Online", timeout=15)
        for show, shown in (("dnd", "Busy"), ("away", "Away")):
            user.call(lambda: user.xmpp.send_presence(pshow=show, pstatus="x"))
            phone.expect(friend + shown, timeout=10)
        user.disconnect()
        phone.expect(friend + "Offline", timeout=10)
    finally:
        phone.close()

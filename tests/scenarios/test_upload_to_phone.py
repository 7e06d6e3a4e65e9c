"""A file shared with HTTP File Upload (XEP-0363) reaches a SIP phone as its URL in plain text.

The XMPP user uploads as Conversations does (slot, PUT, then a message whose body is the GET URL
with the same URL in a XEP-0066 ``jabber:x:oob`` element); the phone (SIPp) gets a MESSAGE whose
body is the URL, and the URL serves the file. A message with only the XEP-0066 URL (no body)
reaches the phone the same way.
"""
from xml.sax.saxutils import escape

from actors import received_messages
from sipp_runner import needs_sipp
from xmpp.upload_client import http, put, request_slot

pytestmark = needs_sipp


def test_the_phone_receives_the_upload_url_as_text(demo, xmpp_client, phone):
    user = xmpp_client(demo, "convergence")
    phone.register()
    picture = b"\x89PNG fake picture"
    put_url, headers, get_url = request_slot(user, "cat.png", len(picture))
    assert put(put_url, picture, headers) == 201
    to = demo.jid("sipuserf")
    oob = f"<x xmlns='jabber:x:oob'><url>{escape(get_url)}</url></x>"
    for body in (f"<body>{escape(get_url)}</body>", ""):  # as Conversations sends it; URL only
        incoming = phone.receive()
        user.call(lambda: user.xmpp.send_raw(f"<message to='{to}' type='chat'>{body}{oob}</message>"))
        (got,) = received_messages(incoming())
        assert f"text/plain;charset=UTF-8\nContent-Length: {len(get_url)}\n\n{get_url}\n" in got
    assert http("GET", get_url)[2] == picture

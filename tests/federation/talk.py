"""Conversation helpers of the federation tests."""


def says(sender, recipient, text: str, to: str | None = None, timeout: float = 15):
    """``sender`` (a scenario_kit Client) writes ``text`` to ``to`` (default: ``recipient``'s bare
    JID); ``recipient`` must get it from ``sender``'s full JID. Returns the stanza."""
    sender.send_message(to or recipient.jid.partition("/")[0], text)
    got = recipient.next("message", timeout=timeout, match=lambda m: m["body"] == text)
    assert str(got["from"]) == sender.jid
    return got

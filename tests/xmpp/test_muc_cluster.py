"""A room's stanzas from the node that holds it, for sessions of this node (plugins/xmpp/
muc_cluster.py), without a server: the self-presence (110) tells which sessions are in which
node's rooms, a nick change keeps the session in, leaving or the session's end forgets it, and
the holder's loss sends each remaining one the XEP-0045 §11.2 presence (110, 332). Across real
nodes: tests/cluster/test_muc_owner.py."""
from __future__ import annotations

import types
import xml.etree.ElementTree as ET

from convergence import Address
from convergence.plugins.xmpp.muc import MUC_USER, shutdown_presence
from convergence.plugins.xmpp.muc_cluster import OUT, RoomOwners
from convergence.plugins.xmpp.stanzas import tag

ROOM = "lobby@conference.example.org"
BOB, CAROL = Address.parse("bob@example.org/desk"), Address.parse("carol@example.org/pc")


class Session:
    def __init__(self):
        self.got = []

    def send(self, element):
        self.got.append(element)


def owners():
    sessions = {BOB: Session(), CAROL: Session()}
    muc = types.SimpleNamespace(core=types.SimpleNamespace(cluster=None), domain="conference.example.org",
                                xmpp=types.SimpleNamespace(session=sessions.get))
    return RoomOwners(muc), sessions


def presence(nick: str, to: Address, kind: str | None = None, codes=("110",)) -> str:
    element = ET.Element(tag("presence"), {"from": f"{ROOM}/{nick}", "to": str(to)})
    if kind:
        element.set("type", kind)
    x = ET.SubElement(element, tag("x", MUC_USER))
    ET.SubElement(x, tag("item", MUC_USER), affiliation="none", role="participant")
    for code in codes:
        ET.SubElement(x, tag("status", MUC_USER), code=code)
    return ET.tostring(element, encoding="unicode")


def cast(owners, to: Address, xml: str, node: str = "node-a"):
    assert owners.received(OUT, {"to": str(to), "node": node, "xml": xml}) is None


def statuses(element) -> list[str]:
    return [s.get("code") for s in element.iter(tag("status", MUC_USER))]


def test_sessions_in_a_lost_node_s_rooms_are_told():
    table, sessions = owners()
    cast(table, BOB, presence("alice", BOB, codes=()))  # another occupant's: passed on, not noted
    cast(table, BOB, presence("bob", BOB))
    cast(table, CAROL, presence("carol", CAROL))
    cast(table, BOB, presence("bob", BOB, "unavailable", ("303", "110")))  # nick change (§7.6.3)
    cast(table, BOB, presence("robert", BOB))
    assert len(sessions[BOB].got) == 4
    assert table.elsewhere == {"node-a": {(BOB, "lobby"): Address.parse(f"{ROOM}/robert"),
                                          (CAROL, "lobby"): Address.parse(f"{ROOM}/carol")}}
    table.forget(CAROL)  # carol's session ended here
    table.node_lost("node-b")  # another node: nothing
    table.node_lost("node-a")
    told = sessions[BOB].got[-1]
    assert (told.get("from"), told.get("to"), told.get("type")) == (f"{ROOM}/robert", str(BOB), "unavailable")
    assert statuses(told) == ["110", "332"]
    assert len(sessions[CAROL].got) == 1 and table.elsewhere == {}


def test_leaving_forgets_and_a_gone_session_gets_nothing():
    table, sessions = owners()
    cast(table, BOB, presence("bob", BOB))
    cast(table, BOB, presence("bob", BOB, "unavailable"))
    gone = Address.parse("dave@example.org/x")
    cast(table, gone, presence("dave", gone))  # no such session here: dropped, not noted
    table.node_lost("node-a")
    assert len(sessions[BOB].got) == 2 and table.elsewhere == {}


def test_the_shutdown_presence_is_xep_0045_s():
    """§11.2 example: unavailable, item affiliation and role none, status 110 and 332."""
    element = shutdown_presence(Address.parse(f"{ROOM}/pistol"), Address.parse("pistol@example.org/client"))
    item = element.find(f"{tag('x', MUC_USER)}/{tag('item', MUC_USER)}")
    assert element.get("type") == "unavailable" and statuses(element) == ["110", "332"]
    assert (item.get("affiliation"), item.get("role")) == ("none", "none")

"""Presence subscription state machine (RFC 6121 §3 and Appendix A), sans-IO.

The state of one side of a relationship (the user's view of one contact) is the roster item's
``subscription`` plus three flags: an outbound request is pending ("Pending Out", the item's
``ask``), an inbound request is pending ("Pending In") and a pre-approval is noted (§3.4). The
tables below are Appendix A verbatim: A.2 for the four subscription stanzas the user sends
(outbound), A.3 for those the user's server receives for the user (inbound). ``outbound`` and
``inbound`` look the transition up and say what the server does with the stanza; the caller
stores the new state, pushes the roster item when ``push`` is set, and routes or delivers.

Rules of this file: no I/O, no store, no XML; states in, decisions out.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType

NONE, NONE_OUT, NONE_IN, NONE_OUT_IN = ("None", "None + Pending Out", "None + Pending In",
                                        "None + Pending Out + Pending In")
TO, TO_IN, FROM, FROM_OUT, BOTH = "To", "To + Pending In", "From", "From + Pending Out", "Both"
#: Appendix A.1: the nine defined states.
STATES = (NONE, NONE_OUT, NONE_IN, NONE_OUT_IN, TO, TO_IN, FROM, FROM_OUT, BOTH)
KINDS = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")

#: Appendix A.2: outbound stanza → {existing state: new state}; states not listed do not change.
OUTBOUND = MappingProxyType({
    "subscribe": MappingProxyType(  # A.2.1
        {NONE: NONE_OUT, NONE_IN: NONE_OUT_IN, FROM: FROM_OUT}),
    "unsubscribe": MappingProxyType(  # A.2.2
        {NONE_OUT: NONE, NONE_OUT_IN: NONE_IN, TO: NONE, TO_IN: NONE_IN, FROM_OUT: FROM, BOTH: FROM}),
    "subscribed": MappingProxyType(  # A.2.3
        {NONE_IN: FROM, NONE_OUT_IN: FROM_OUT, TO_IN: BOTH}),
    "unsubscribed": MappingProxyType(  # A.2.4
        {NONE_IN: NONE, NONE_OUT_IN: NONE_OUT, TO_IN: TO, FROM: NONE, FROM_OUT: NONE_OUT, BOTH: TO}),
})

#: Appendix A.3: inbound stanza → {existing state: new state} for the states where the stanza is
#: delivered to the user; in every other state it is not delivered and nothing changes.
INBOUND = MappingProxyType({
    "subscribe": MappingProxyType(  # A.3.1
        {NONE: NONE_IN, NONE_OUT: NONE_OUT_IN, TO: TO_IN}),
    "unsubscribe": MappingProxyType(  # A.3.2
        {NONE_IN: NONE, NONE_OUT_IN: NONE_OUT, TO_IN: TO, FROM: NONE, FROM_OUT: NONE_OUT, BOTH: TO}),
    "subscribed": MappingProxyType(  # A.3.3
        {NONE_OUT: TO, NONE_OUT_IN: TO_IN, FROM_OUT: BOTH}),
    "unsubscribed": MappingProxyType(  # A.3.4
        {NONE_OUT: NONE, NONE_OUT_IN: NONE_IN, TO: NONE, TO_IN: NONE_IN, FROM_OUT: FROM, BOTH: FROM}),
})

#: §3.4: the states in which a pre-approval can be noted (the contact may not see our presence yet
#: and has not asked); in A.3.1 an inbound subscribe in such a state is approved automatically.
PRE_APPROVABLE = MappingProxyType({NONE: FROM, NONE_OUT: FROM_OUT, TO: BOTH})

_FIELDS = MappingProxyType({  # state name → (subscription, pending out, pending in)
    NONE: ("none", False, False), NONE_OUT: ("none", True, False), NONE_IN: ("none", False, True),
    NONE_OUT_IN: ("none", True, True), TO: ("to", False, False), TO_IN: ("to", False, True),
    FROM: ("from", False, False), FROM_OUT: ("from", True, False), BOTH: ("both", False, False),
})
_NAMES = MappingProxyType({fields: name for name, fields in _FIELDS.items()})


@dataclass(frozen=True)
class State:
    """One side of a subscription: what the user's roster says about one contact."""

    subscription: str = "none"
    pending_out: bool = False
    pending_in: bool = False
    approved: bool = False

    @property
    def name(self) -> str:
        """The Appendix A.1 name, e.g. ``"None + Pending Out"``."""
        return _NAMES[(self.subscription, self.pending_out, self.pending_in)]

    @classmethod
    def named(cls, name: str, approved: bool = False) -> State:
        return cls(*_FIELDS[name], approved=approved)

    @property
    def sees_contact(self) -> bool:
        """The user receives the contact's presence (subscription ``to`` or ``both``)."""
        return self.subscription in ("to", "both")

    @property
    def shows_contact(self) -> bool:
        """The contact receives the user's presence (subscription ``from`` or ``both``)."""
        return self.subscription in ("from", "both")


@dataclass(frozen=True)
class Outcome:
    """What to do after a subscription stanza.

    ``forward``: outbound, route the stanza to the contact; inbound, deliver it to the user's
    available resources (or keep it while they have none, for ``subscribe``). ``reply``: a stanza
    type the server sends to the contact on the user's behalf (the automatic ``subscribed`` of
    §3.1.3 and §3.4). ``push``: the roster item's visible part (subscription, ask, approved)
    changed, so it is pushed to the interested resources (§2.1.6).
    """

    old: State
    new: State
    forward: bool
    reply: str | None = None

    @property
    def push(self) -> bool:
        old, new = self.old, self.new
        return (old.subscription, old.pending_out, old.approved) != \
            (new.subscription, new.pending_out, new.approved)


def _moved(state: State, name: str) -> State:
    new = State.named(name, state.approved)
    return replace(new, approved=False) if new.shows_contact else new  # a used pre-approval is gone


def outbound(kind: str, state: State) -> Outcome:
    """The user sent ``kind`` to the contact (Appendix A.2, §3.1.2, §3.2.2, §3.3.2, §3.4).

    ``subscribe`` and ``unsubscribe`` are always routed. ``subscribed`` and ``unsubscribed`` are
    routed only when they answer or end something; a ``subscribed`` with no request pending notes
    a pre-approval instead (§3.4), and an ``unsubscribed`` then cancels it.
    """
    if kind not in KINDS:
        raise ValueError(f"not a subscription stanza: {kind}")
    target = OUTBOUND[kind].get(state.name)
    if target is not None:
        return Outcome(state, _moved(state, target), forward=True)
    if kind == "subscribed" and state.name in PRE_APPROVABLE:
        return Outcome(state, replace(state, approved=True), forward=False)
    if kind == "unsubscribed":
        return Outcome(state, replace(state, approved=False), forward=False)
    return Outcome(state, state, forward=kind in ("subscribe", "unsubscribe"))


def inbound(kind: str, state: State) -> Outcome:
    """The contact sent ``kind`` to the user (Appendix A.3, §3.1.3, §3.1.6, §3.2.3, §3.3.3).

    A ``subscribe`` from a contact that already sees the user's presence, or that the user
    pre-approved, is answered ``subscribed`` by the server and not delivered.
    """
    if kind not in KINDS:
        raise ValueError(f"not a subscription stanza: {kind}")
    if kind == "subscribe":
        if state.shows_contact:
            return Outcome(state, state, forward=False, reply="subscribed")
        if state.approved and state.name in PRE_APPROVABLE:
            return Outcome(state, _moved(state, PRE_APPROVABLE[state.name]), forward=False,
                           reply="subscribed")
    target = INBOUND[kind].get(state.name)
    if target is None:
        return Outcome(state, state, forward=False)
    return Outcome(state, _moved(state, target), forward=True)

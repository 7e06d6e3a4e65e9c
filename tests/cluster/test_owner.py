"""Names one node owns (``Cluster.owner``/``take``/``release``, core/cluster.py) on a real Redis,
with two members in this process that are not started (no greenlets: the test writes their
heartbeat keys, and needs no PostgreSQL): a name goes to the first node that asks and stays its
own until it releases it or its heartbeat key is gone; a node that finds its claim taken over at
its heartbeat lets go of the name; without Redis a name this node does not hold is unknown
(``service-unavailable`` with ``retry_after``); a name may be looked up without claiming it, or
taken whoever had it. Across real processes: test_muc_owner.py, test_component_holder.py."""
from __future__ import annotations

import pytest

from convergence import RoutingError
from convergence.cluster import Cluster

from .conftest import REDIS


@pytest.fixture
def members(make_core, redis_prefix):
    client, prefix = redis_prefix
    made = []

    def member(name: str) -> Cluster:
        core = make_core({"cluster": {"redis": REDIS, "prefix": prefix, "node_timeout": 30.0}})
        made.append(Cluster(core, name))
        client.set(f"{prefix}node:{name}", made[-1]._beat(), px=30000)  # as ``start`` does
        made[-1]._healthy = True
        return made[-1]
    yield member, client, prefix
    for one in made:
        one.redis.close()


def test_one_owner_per_name(members):
    member, client, prefix = members
    a, b = member("node-a"), member("node-b")
    assert a.owner("room") == "node-a"  # the first to ask
    assert b.owner("room") == "node-a"
    assert client.get(f"{prefix}own:room") == "node-a" and 0 < client.pttl(f"{prefix}own:room") <= 30000
    assert "room" in a.owned and "room" not in b.owned
    b.release("room")  # not b's: nothing happens
    assert b.owner("room") == "node-a"
    a.release("room")
    assert client.get(f"{prefix}own:room") is None
    assert b.owner("room") == "node-b" and a.owner("room") == "node-b"


def test_a_lost_owner_s_names_are_taken_over(members):
    member, client, prefix = members
    a, b = member("node-a"), member("node-b")
    assert a.owner("room") == "node-a"
    client.delete(f"{prefix}node:node-a")  # node A's heartbeat expired: it counts as lost
    assert b.owner("room") == "node-b"
    pipe = a.redis.pipeline(transaction=False)  # node A's next heartbeat claims again
    a._kept(a._claim_owned(pipe), pipe.execute())
    assert "room" not in a.owned and a.owner("room") == "node-b"


def test_without_redis_only_own_names_are_known(members):
    member, _, _ = members
    a = member("node-a")
    assert a.owner("mine") == "node-a"
    a._healthy = False  # as after a failed write (``_lost``)
    assert a.owner("mine") == "node-a"
    with pytest.raises(RoutingError) as unknown:
        a.owner("other")
    assert unknown.value.condition == "service-unavailable" and unknown.value.retry_after == 7.5


def test_look_up_and_take(members):
    """``owner(name, claim=False)`` only looks; ``take`` makes this node the owner whoever had it
    and says who did (an XMPP component connected again through another node)."""
    member, client, prefix = members
    a, b = member("node-a"), member("node-b")
    assert b.owner("gateway", claim=False) is None and client.get(f"{prefix}own:gateway") is None
    assert a.take("gateway") is None  # nobody had it
    assert b.owner("gateway", claim=False) == "node-a"
    assert b.take("gateway") == "node-a" and a.take("gateway") == "node-b"
    assert a.take("gateway") is None  # had it already
    b.release("gateway")  # not b's any more: the key stays a's
    assert client.get(f"{prefix}own:gateway") == "node-a"

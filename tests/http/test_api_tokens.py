"""API token repository: only digests are stored, tokens go with their account."""
from sqlalchemy import select

from convergence.plugins.http import tokens
from convergence.plugins.http.tokens import ApiToken


def test_create_owner_list_revoke(core):
    core.add_account("alice", "pw")
    first_id, first = tokens.create(core.db, "alice", "laptop")
    second_id, second = tokens.create(core.db, "alice")
    assert first != second and len(first) == 43
    assert tokens.owner(core.db, first) == "alice" and tokens.owner(core.db, "nope") is None
    assert [(t.id, t.name) for t in tokens.tokens(core.db, "alice")] == [(first_id, "laptop"),
                                                                         (second_id, "")]
    assert tokens.revoke(core.db, first_id) and not tokens.revoke(core.db, first_id)
    assert tokens.owner(core.db, first) is None and tokens.owner(core.db, second) == "alice"


def test_only_the_digest_is_stored(core):
    core.add_account("alice", "pw")
    _, token = tokens.create(core.db, "alice")
    with core.db.read() as session:
        stored = session.scalars(select(ApiToken.digest)).all()
    assert stored == [tokens.digest(token)] and token.encode() not in stored[0]


def test_tokens_die_with_their_account(core):
    core.add_account("alice", "pw")
    _, token = tokens.create(core.db, "alice")
    core.delete_account("alice")
    core.add_account("alice", "pw")
    assert tokens.owner(core.db, token) is None

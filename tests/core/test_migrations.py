"""Alembic owns the schema: the migrations must build exactly what the models describe."""
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from convergence.store.models import Base


def test_migrations_match_models(core):
    with core.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent_and_current_is_head(core):
    core.db.upgrade()
    current, head = core.db.current()
    assert current == head == "0001"

"""Alembic owns the schema: the migrations must build exactly what the models describe."""
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from convergence.store.models import Base


def test_migrations_match_models(core):
    with core.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # plugins' own tables (add_migrations) are not the core's models
    assert [d for d in diff if not (d[0] == "remove_table" and d[1].name not in Base.metadata.tables)] == []


def test_upgrade_is_idempotent_and_current_is_head(core):
    core.db.upgrade()
    current, heads, up_to_date = core.db.current()
    assert up_to_date and "0003" in heads

"""The protocol tables go to their plugins: ``sip_bindings`` (SIP), ``vcards`` (XMPP), ``api_tokens`` (HTTP).

From this revision on each of these tables is created by its plugin's own Alembic branch
(``sip_0001``, ``xmpp_0001``, ``http_0001``, which depend on this revision), so a server that runs
without a plugin has no table of it. A database made by an earlier release has the three tables,
created by 0001–0003: a table holding rows is kept exactly as it is and its plugin's branch adopts
it (no row is copied, none is lost, even while that plugin is disabled); an empty one is dropped
here and its plugin's branch creates it again. Downgrades drop nothing: a plugin's first
revision, downgraded, hands its table back as it is, which is what 0003 had.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

#: each table with its indexes (as 0001–0003 named them)
TABLES = {"sip_bindings": ("ix_sip_bindings_account_id", "ix_sip_bindings_expires_at"),
          "vcards": (),
          "api_tokens": ("ix_api_tokens_account_id",)}


def upgrade() -> None:
    bind = op.get_bind()
    for table, indexes in TABLES.items():
        if not sa.inspect(bind).has_table(table):
            continue
        if bind.execute(sa.text(f"SELECT 1 FROM {table} LIMIT 1")).first() is not None:
            continue  # rows: the plugin's branch adopts the table as it is
        for index in indexes:
            op.drop_index(index, table_name=table)
        op.drop_table(table)


def downgrade() -> None:
    """Nothing to do: the plugins' downgrades leave their tables in place (``sip_0001``…), so
    0003 finds the three tables it made, with every row."""

"""The protocol tables go to their plugins: ``sip_bindings`` (SIP), ``vcards`` (XMPP), ``api_tokens`` (HTTP).

From this revision on each of these tables is created by its plugin's own Alembic branch
(``sip_0001``, ``xmpp_0001``, ``http_0001``, which depend on this revision), so a server that runs
without a plugin has no table of it. A database made by an earlier release has the three tables,
created by 0001–0003: a table holding rows is kept exactly as it is and its plugin's branch adopts
it (no row is copied, none is lost, even while that plugin is disabled); an empty one is dropped
here and its plugin's branch creates it again.

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
    """Give 0003 back its tables where a plugin's downgrade removed them (empty, as at 0003's
    first upgrade)."""
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("sip_bindings"):
        op.create_table('sip_bindings',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('contact', sa.String(length=1024), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('q', sa.Float(), nullable=True),
        sa.Column('call_id', sa.String(length=255), nullable=False),
        sa.Column('cseq', sa.Integer(), nullable=False),
        sa.Column('received', sa.String(length=255), nullable=True),
        sa.Column('path', sa.Text(), nullable=True),
        sa.Column('instance', sa.String(length=255), nullable=True),
        sa.Column('user_agent', sa.String(length=255), nullable=True),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('account_id', 'contact'))
        op.create_index('ix_sip_bindings_account_id', 'sip_bindings', ['account_id'])
        op.create_index('ix_sip_bindings_expires_at', 'sip_bindings', ['expires_at'])
    if not inspector.has_table("vcards"):
        op.create_table('vcards',
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('vcard', sa.Text(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('account_id'))
    if not inspector.has_table("api_tokens"):
        op.create_table('api_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('digest', sa.LargeBinary(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('digest'))
        op.create_index('ix_api_tokens_account_id', 'api_tokens', ['account_id'])

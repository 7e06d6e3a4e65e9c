"""The SIP plugin's ``sip_bindings`` table (RFC 3261 §10.3 bindings, after Kamailio usrloc).

A database made before core revision 0004 already has the table, with rows: it is adopted as it
is. Otherwise it is created here, in the same shape.

Revision ID: sip_0001
Revises: (none, the branch ``sip``)
"""
from alembic import op
import sqlalchemy as sa


revision = 'sip_0001'
down_revision = None
branch_labels = ('sip',)
depends_on = '0004'


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table('sip_bindings'):
        return
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


def downgrade() -> None:
    """The table is handed back as it is, rows and all (core revision 0004 gave it; at 0003 the
    core's schema has it), never dropped."""

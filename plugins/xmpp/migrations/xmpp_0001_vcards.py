"""The XMPP plugin's ``vcards`` table (vcard-temp, XEP-0054).

A database made before core revision 0004 already has the table, with rows: it is adopted as it
is. Otherwise it is created here, in the same shape.

Revision ID: xmpp_0001
Revises: (none, the branch ``xmpp``)
"""
from alembic import op
import sqlalchemy as sa


revision = 'xmpp_0001'
down_revision = None
branch_labels = ('xmpp',)
depends_on = '0004'


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table('vcards'):
        return
    op.create_table('vcards',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('vcard', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id'))


def downgrade() -> None:
    """The table is handed back as it is, rows and all (core revision 0004 gave it; at 0003 the
    core's schema has it), never dropped."""

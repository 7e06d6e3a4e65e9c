"""The XMPP plugin's room archives (XEP-0313 on MUC rooms): ``muc_history`` keeps each message's
XEP-0359 stanza id, indexed with its room, and is indexed by time for retention.

Revision ID: xmpp_0006_muc_archive
Revises: xmpp_0005_archive
"""
from alembic import op
import sqlalchemy as sa


revision = 'xmpp_0006_muc_archive'
down_revision = 'xmpp_0005_archive'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('muc_history') as batch:
        batch.add_column(sa.Column('stanza_id', sa.String(length=64), nullable=True))
    op.create_index('ix_muc_history_room_stanza_id', 'muc_history', ['room_id', 'stanza_id'], unique=False)
    op.create_index(op.f('ix_muc_history_stamp'), 'muc_history', ['stamp'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_muc_history_stamp'), table_name='muc_history')
    op.drop_index('ix_muc_history_room_stanza_id', table_name='muc_history')
    with op.batch_alter_table('muc_history') as batch:
        batch.drop_column('stanza_id')

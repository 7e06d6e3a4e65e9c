"""The HTTP plugin's ``uploads`` table: HTTP File Upload slots and files (XEP-0363, ``uploads.py``).

Revision ID: http_0002
Revises: http_0001
"""
from alembic import op
import sqlalchemy as sa


revision = 'http_0002'
down_revision = 'http_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('uploads',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('content_type', sa.String(length=255), nullable=True),
    sa.Column('digest', sa.LargeBinary(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('slot_expires', sa.DateTime(), nullable=False),
    sa.Column('keep_seconds', sa.Integer(), nullable=False),
    sa.Column('uploaded_at', sa.DateTime(), nullable=True),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_uploads_account_id', 'uploads', ['account_id'])
    op.create_index('ix_uploads_slot_expires', 'uploads', ['slot_expires'])
    op.create_index('ix_uploads_expires_at', 'uploads', ['expires_at'])


def downgrade() -> None:
    op.drop_table('uploads')

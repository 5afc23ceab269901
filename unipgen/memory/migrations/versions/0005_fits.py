"""behavior fits (the fitted behavior space's versions); jobs of a tenant, with no user (a fit)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

import unipgen.memory.models

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('behavior_fits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('space', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('config', sa.JSON(none_as_null=True), nullable=False),
    sa.Column('stats', sa.JSON(none_as_null=True), nullable=False),
    sa.Column('mapping', sa.LargeBinary(), nullable=True),
    sa.Column('mapping_rows', sa.Integer(), nullable=False),
    sa.Column('mapping_cols', sa.Integer(), nullable=False),
    sa.Column('last_event_id', sa.BigInteger(), nullable=False),
    sa.Column('stale_reason', sa.Text(), nullable=True),
    sa.Column('created_at', unipgen.memory.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('stale_since', unipgen.memory.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'generation')
    )
    with op.batch_alter_table('behavior_fits', schema=None) as batch_op:
        batch_op.create_index('ix_behavior_fits_status', ['tenant_id', 'status'], unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('user_id',
               existing_type=sa.INTEGER(),
               nullable=True)



def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('user_id',
               existing_type=sa.INTEGER(),
               nullable=False)

    with op.batch_alter_table('behavior_fits', schema=None) as batch_op:
        batch_op.drop_index('ix_behavior_fits_status')

    op.drop_table('behavior_fits')

"""feedback on generated outputs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

import unipgen.memory.models

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('feedback',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('artifact_id', sa.Integer(), nullable=False),
    sa.Column('rejected_id', sa.Integer(), nullable=True),
    sa.Column('ts', unipgen.memory.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('meta', sa.JSON(none_as_null=True), nullable=True),
    sa.ForeignKeyConstraint(['artifact_id'], ['artifacts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['rejected_id'], ['artifacts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feedback_artifact_id'), ['artifact_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_feedback_rejected_id'), ['rejected_id'], unique=False)
        batch_op.create_index('ix_feedback_user', ['user_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.drop_index('ix_feedback_user')
        batch_op.drop_index(batch_op.f('ix_feedback_rejected_id'))
        batch_op.drop_index(batch_op.f('ix_feedback_artifact_id'))

    op.drop_table('feedback')

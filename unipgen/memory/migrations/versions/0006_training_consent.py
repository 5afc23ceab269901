"""training consent: when a user consented to adapters trained on their faces and subjects

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08

Existing users get NULL: no consent to training until they give it (docs/memory.md).
"""

import sqlalchemy as sa
from alembic import op

import unipgen.memory.models

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('training_consent_at', unipgen.memory.models.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('training_consent_at')

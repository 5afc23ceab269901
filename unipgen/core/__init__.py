"""User modeling: encoders, preference model, retrieval, prompt composition, context building.

The entry point is `UserModel` (store + encoders → `UserContext` and `PersonalizationPlan`).
"""

from unipgen.core.context import ContextBuilder, ContextConfig
from unipgen.core.preference import PreferenceConfig
from unipgen.core.router import route
from unipgen.core.usermodel import UserModel

__all__ = ["ContextBuilder", "ContextConfig", "PreferenceConfig", "UserModel", "route"]

"""User modeling: encoders, preference model, retrieval, prompt composition, context building."""

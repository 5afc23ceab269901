"""The FastAPI service: tenants, API keys, uploads, async jobs."""

"""The public contract: commands, outcomes and query views (pydantic v2)."""

"""The unit layer: fast, in-process tests of one module at a time (no uvicorn, no LM Studio)."""

"""An LM Studio simulator speaking LM Studio's websocket protocol (for tests and --simulate)."""

"""Smoke tests of the bench scripts (short runs end to end)."""

"""binwatch demo: one command that shows binwatch catching mismatches (docs/demo.md)."""

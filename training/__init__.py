"""binwatch training package."""

"""binwatch export package."""

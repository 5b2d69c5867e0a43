"""binwatch contract package."""

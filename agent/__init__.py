"""binwatch agent package."""

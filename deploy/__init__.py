"""binwatch deploy package."""

"""``python -m demo`` = ``binwatch demo``."""

from demo.cli import app

if __name__ == "__main__":
    app()

"""``python -m agent run ...``: the agent's CLI without the root ``binwatch`` command."""

from agent.cli import app

if __name__ == "__main__":
    app()

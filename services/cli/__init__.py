"""The `meshworker` command (main.py parses it): node.py runs a node and its programs,
progress.py prints one coming up, commands.py asks a running one."""

from services.cli.main import main

__all__ = ["main"]

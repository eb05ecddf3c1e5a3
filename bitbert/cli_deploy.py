"""CLI commands (filled in by their issue)."""


def add_deploy_commands(sub) -> None:
    return None

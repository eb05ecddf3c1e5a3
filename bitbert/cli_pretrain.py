"""CLI commands (filled in by their issue)."""


def add_pretrain_commands(sub) -> None:
    return None

"""Command line entry point (filled in as commands land)."""
from __future__ import annotations

import click


@click.group()
def main() -> None:
    """tickrec: capture market-data feeds to Parquet and replay them."""

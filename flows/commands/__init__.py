"""``brivl`` subcommands, one module each (see :mod:`flows.cli`)."""

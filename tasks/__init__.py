"""Prefect tasks: thin, cached wrappers around :mod:`brivl` that return small things."""

from brivl.env import apply_defaults

apply_defaults()

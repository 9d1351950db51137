"""Prefect flows composing the tasks; a flow body reads like a table of contents."""

from brivl.env import apply_defaults

apply_defaults()

"""Which download failures a rerun retries: the passing ones (timeout, connection error,
429, 5xx), never the final ones. The rerun itself (only those rows fetched again, every
earlier outcome kept) is tested through the CLI: tests/flows/test_download_retry_cli.py."""

from __future__ import annotations

from brivl.download.reasons import retryable


def test_retryable_reasons() -> None:
    assert all(map(retryable, ("timeout", "connection_error", "http_429", "http_500", "http_503")))
    assert not any(map(retryable, ("http_404", "robots_disallowed", "optout_header",
                                   "not_image", "http_5", "missing_from_output")))

"""Issue 16 item 7: ``brivl pipeline --demo`` names its crawl by the demo's content, not its
port. With the demo's port taken, the seeds, the stage configs and so the crawl key are the
ones of a run on the free port, and the seed reaches the demo, not the port's holder."""

from __future__ import annotations

import argparse

from brivl.crawl import AddressGuard
from brivl.crawl.fetch import Fetcher
from brivl.demo import DemoConfig, build_site, serve
from brivl.demo.identity import site_identity
from flows.commands import pipeline as command
from tasks.crawl import resolve_crawl


def _demo(monkeypatch, port: int, images: int = 60) -> tuple[list[str], dict, int]:
    """(seeds, config, the guarded fetch's status of the first seed) of one demo source."""
    monkeypatch.setattr(command, "DEMO_PORT", port)
    cfg: dict = {"crawl": {}}
    args = argparse.Namespace(demo="synthetic", demo_images=images)
    with command._demo_source(args, cfg) as seeds:
        guard = AddressGuard(tuple(cfg["crawl"]["allow_cidrs"]))
        status = Fetcher(guard, "brivl-test", timeout_s=5).fetch(seeds[0]).status
    return seeds, cfg, status


def test_the_demo_crawl_has_one_identity_on_a_free_and_a_taken_port(monkeypatch):
    holder_site = build_site(DemoConfig(n_images=40, seed=9))
    with serve(holder_site) as probe:
        port = probe.port
    free = _demo(monkeypatch, port)
    with serve(holder_site, port=port) as holder:
        taken = _demo(monkeypatch, port)
        assert not holder.access_log.paths()  # the seed reached the demo, not the holder
    assert free == taken and free[2] == 200
    seeds, cfg, _ = free
    site = build_site(DemoConfig(n_images=60))
    assert seeds == [f"http://127.0.0.1:{port}/#synthetic-60-{site_identity(site)}"]
    assert (resolve_crawl(free[0], free[1]["crawl"]).key
            == resolve_crawl(taken[0], taken[1]["crawl"]).key)


def test_another_demo_web_has_another_identity(monkeypatch):
    with serve(build_site(DemoConfig(n_images=40))) as probe:
        port = probe.port
    assert _demo(monkeypatch, port, 60)[0] != _demo(monkeypatch, port, 80)[0]
    assert site_identity(build_site(DemoConfig(n_images=60))) != site_identity(
        build_site(DemoConfig(n_images=60, seed=1)))

"""Issue 16 item 7: the demo web's identity does not depend on the port it listens on.

The canonical port is held by a foreign server (as when another program took it); the demo
then listens elsewhere behind a port forward. The guarded clients reach the demo, never the
port's holder, and a crawl writes the very rows it writes on the canonical port itself."""

from __future__ import annotations

import pytest

from brivl.crawl import AddressGuard, CrawlConfig, crawl_pages
from brivl.crawl.fetch import Fetcher
from brivl.crawl.forward import PortForward, active_forwards, forwarding
from brivl.demo import DemoConfig, build_site, serve, serve_at

LOOPBACK = ("127.0.0.1/32",)
SITE = build_site(DemoConfig(n_images=40, seed=3))
FOREIGN = build_site(DemoConfig(n_images=40, seed=4))  # what else answers on the port


def _fetch_home(origin: str) -> tuple[int, bytes]:
    fetched = Fetcher(AddressGuard(LOOPBACK), "brivl-test", timeout_s=5).fetch(origin + "/")
    return fetched.status, fetched.body


def _rows(seeds: list[str]) -> list[dict]:
    """Candidates and page records of a crawl, without their timestamps."""
    out = crawl_pages(seeds, CrawlConfig(allow_cidrs=LOOPBACK, max_pages=12, workers=2))
    drop = {"crawl_time", "fetched_at", "elapsed_s"}
    return [{k: v for k, v in r.items() if k not in drop} for r in out.candidates + out.pages]


@pytest.mark.parametrize(("host", "port", "live"),
                         [("10.0.0.1", 80, 81), ("localhost", 80, 81), ("127.0.0.1", 0, 81),
                          ("127.0.0.1", 80, 70000)])
def test_only_loopback_ip_literals_and_real_ports_can_be_forwarded(host, port, live):
    with pytest.raises(ValueError, match="port forward"):
        PortForward(host, port, live)


def test_a_taken_port_is_forwarded_to_the_demo_and_only_inside_the_block():
    with serve(FOREIGN) as holder:
        canonical = holder.port
        with serve_at(SITE, canonical) as demo:
            assert demo.port != canonical and demo.origin == f"http://127.0.0.1:{canonical}"
            assert demo.seed_urls == [f"http://127.0.0.1:{canonical}/"]
            assert active_forwards() == (PortForward("127.0.0.1", canonical, demo.port),)
            status, body = _fetch_home(demo.origin)
            assert status == 200 and body == SITE.response("/").body
            assert demo.access_log.paths() == ["/"] and not holder.access_log.paths()
        assert active_forwards() == ()
        assert _fetch_home(f"http://127.0.0.1:{canonical}")[0] == 200
        assert holder.access_log.paths() == ["/"] and demo.access_log.paths() == ["/"]


def test_a_free_port_is_served_directly_without_a_forward():
    with serve(FOREIGN) as probe:
        port = probe.port
    with serve_at(SITE, port) as demo:  # free again: bound as asked
        assert demo.port == port and active_forwards() == ()
        assert _fetch_home(demo.origin)[0] == 200


def test_a_second_live_port_for_one_origin_is_refused():
    with forwarding(PortForward("127.0.0.1", 8731, 40001)):
        with pytest.raises(RuntimeError, match="already forwarded to port 40001"):
            with forwarding(PortForward("127.0.0.1", 8731, 40002)):
                pass
    assert active_forwards() == ()


def test_a_crawl_through_the_forward_writes_the_rows_of_the_canonical_port():
    with serve(SITE) as direct:
        canonical = direct.port
        expected = _rows(direct.seed_urls)
    with serve(FOREIGN, port=canonical) as holder, serve_at(SITE, canonical) as demo:
        assert demo.port != canonical == holder.port
        moved = _rows(demo.seed_urls)
        assert not holder.access_log.paths() and demo.access_log.paths()
    assert [r for r in expected if "image_url" in r]  # the crawl found candidates
    assert moved == expected
    assert all(f":{canonical}/" in r.get("image_url", r.get("url")) for r in moved)

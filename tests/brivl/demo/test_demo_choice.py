"""Choosing the demo web on the command line: OpenClipArt by default, synthetic on request
or as the fallback (one line says why). Lives beside the tree fixture it needs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from brivl.crawl import AddressGuard
from brivl.crawl.fetch import Fetcher
from brivl.demo import ClipArtSite, DemoSite
from brivl.demo.openclipart import STAMP
from flows.cli import build_parser, main
from flows.commands.demo import build_demo_web
from flows.commands.pipeline import _demo_source


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BRIVL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def fetched(home: Path, clipart_tree) -> Path:
    """A project home whose OpenClipArt cache is in place (the tiny tree, stamp written)."""
    cache = home / "cache" / "openclipart"
    clipart_tree.make_tree(cache)
    (cache / STAMP).write_text(json.dumps({"packages": ["test tree"]}))
    return cache


def test_demo_flag_defaults_to_openclipart_and_names_synthetic() -> None:
    parser = build_parser()
    assert parser.parse_args(["pipeline", "--demo"]).demo == "openclipart"
    assert parser.parse_args(["pipeline", "--demo", "synthetic", "--stages", "data"]).demo == (
        "synthetic")
    assert parser.parse_args(["pipeline", "--seed", "http://x/"]).demo is None
    assert parser.parse_args(["demo", "serve", "--web", "synthetic"]).web == "synthetic"
    assert parser.parse_args(["demo", "eval-sets", "out"]).web == "openclipart"
    with pytest.raises(SystemExit):
        parser.parse_args(["pipeline", "--demo", "nonsense"])


def test_unavailable_openclipart_falls_back_with_one_line(home, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", str(home / "no-tools"))
    web, site = build_demo_web("openclipart", images=120)
    assert web == "synthetic" and isinstance(site, DemoSite) and len(site.images) == 120
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["OpenClipArt not available (apt-get and dpkg-deb not found (not a "
                     "Debian-like system)); using the synthetic demo web"]


def test_demo_eval_sets_command_writes_the_real_sets(fetched, tmp_path) -> None:
    out = tmp_path / "evals"
    assert main(["demo", "eval-sets", str(out), "--n-zeroshot", "20", "--n-retrieval", "8"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "_manifest.json", "classes.json", "retrieval.parquet", "zeroshot_images.parquet"]
    assert main(["demo", "eval-sets", str(tmp_path / "syn"), "--web", "synthetic", "--images",
                 "120", "--n-zeroshot", "8", "--n-retrieval", "4", "--n-text", "4",
                 "--n-vqa", "4"]) == 0
    assert (tmp_path / "syn" / "vqa.parquet").is_file()


def test_pipeline_demo_source_serves_the_real_web(fetched, home) -> None:
    args = argparse.Namespace(demo="openclipart", demo_images=None)
    cfg: dict = {"crawl": {}}
    with _demo_source(args, cfg) as seeds:
        assert len(seeds) == 1 and seeds[0].split("#")[1].startswith("openclipart-")
        # through the guard: when port 8731 is taken, only a guarded client finds the demo
        page = Fetcher(AddressGuard(("127.0.0.1/32",)), "brivl-test", timeout_s=10).fetch(
            seeds[0].split("#")[0])
        assert page.status == 200 and b"Open Clip Art Mirror" in page.body
        assert cfg["crawl"]["allow_cidrs"] == ["127.0.0.1/32"]
        eval_dir = Path(cfg["eval_sets"])
        assert eval_dir.parent == home / "eval" and (eval_dir / "_manifest.json").is_file()
    web, site = build_demo_web("openclipart")
    assert web == "openclipart" and isinstance(site, ClipArtSite)

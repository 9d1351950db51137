"""Bad stage inputs caught early: candidates schema, unreadable parts, seeds, empty crawls."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from brivl.crawl import CrawlConfig, read_candidates, run_crawl
from brivl.crawl.seeds import check_seeds
from brivl.crawl.stage import no_candidates_message
from brivl.demo import DemoConfig, build_site, serve
from brivl.download import DownloadConfig, run_download
from brivl.errors import InputError, SchemaError

LOOPBACK = ("127.0.0.1/32",)


@pytest.fixture(scope="module")
def crawl_dir(tmp_path_factory) -> Path:
    """A real (small) crawl of the demo web on 127.0.0.1."""
    out = tmp_path_factory.mktemp("crawl") / "crawl"
    with serve(build_site(DemoConfig(n_images=40, seed=3))) as server:
        run_crawl(server.seed_urls, CrawlConfig(allow_cidrs=LOOPBACK, max_pages=3), out)
    return out


def _copy_with(crawl_dir: Path, target: Path, change) -> Path:
    """A copy of the crawl whose candidates part is ``change(table)``."""
    (target / "candidates").mkdir(parents=True)
    (target / "_manifest.json").write_bytes((crawl_dir / "_manifest.json").read_bytes())
    table = pq.read_table(crawl_dir / "candidates" / "part-00000.parquet")
    pq.write_table(change(table), target / "candidates" / "part-00000.parquet")
    return target


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["decision"]),
         r"part-00000\.parquet: missing column\(s\) \['decision'\]"),
        (lambda t: t.set_column(t.schema.get_field_index("caption"), "caption",
                                pa.array(range(t.num_rows), pa.int64())),
         r"part-00000\.parquet: column 'caption' is int64; accepted: string"),
    ],
)
def test_candidates_schema_errors_name_file_and_column(crawl_dir, tmp_path, change, message):
    bad = _copy_with(crawl_dir, tmp_path / "bad", change)
    with pytest.raises(SchemaError, match=message):
        run_download(bad, DownloadConfig(allow_cidrs=LOOPBACK), tmp_path / "dl")
    assert not (tmp_path / "dl" / "rejected").exists()  # refused before any work


def test_an_unreadable_candidates_part_is_recorded_and_the_rest_goes_on(crawl_dir, tmp_path):
    def disallowed(table: pa.Table) -> pa.Table:  # nothing left to fetch: no network needed
        index = table.schema.get_field_index("decision")
        return table.set_column(index, "decision", pa.array(["robots_disallowed"] * len(table)))

    source = _copy_with(crawl_dir, tmp_path / "in", disallowed)
    broken = source / "candidates" / "part-00001.parquet"
    broken.write_bytes(b"PAR1 this is not a parquet file")
    n = pq.read_metadata(source / "candidates" / "part-00000.parquet").num_rows
    body = run_download(source, DownloadConfig(allow_cidrs=LOOPBACK), tmp_path / "dl")
    assert body["row_counts"]["bad_input_files"] == 1
    assert body["row_counts"]["candidates"] == body["row_counts"]["rejected"] == n > 0
    [bad] = body["extra"]["bad_input_files"]
    assert bad["file"] == str(broken) and bad["error"]
    with pytest.raises(InputError, match=r"unreadable candidates file\(s\): .*part-00001\.parquet"):
        read_candidates(source)  # a reader that cannot record it is told


@pytest.mark.parametrize(
    ("seed", "why"),
    [("notaurl", "not a URL"), ("ftp://127.0.0.1/x", "scheme 'ftp'"), ("https://", "no host"),
     ("example.org/page", "not a URL")],
)
def test_bad_seeds_fail_before_the_crawl(tmp_path, seed, why):
    with pytest.raises(InputError, match=rf"seed '{seed}' is not accepted \({why}\); accepted: "
                                         r"an http:// or https:// URL"):
        run_crawl([seed], CrawlConfig(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert check_seeds(["http://example.org/", "https://a.b:8080/x"]) == [
        "http://example.org/", "https://a.b:8080/x"]


def test_a_crawl_without_candidates_says_so(tmp_path):
    with serve(build_site(DemoConfig(n_images=40, seed=3))) as server:
        seed = f"{server.base_url}/robots.txt"  # a page without images
        body = run_crawl([seed], CrawlConfig(allow_cidrs=LOOPBACK, max_depth=0), tmp_path / "c")
    assert body["row_counts"]["candidates"] == 0
    message = no_candidates_message(body, tmp_path / "c")
    assert message.startswith(f"no candidates from these seeds ['{seed}']: 1 pages considered")
    assert str(tmp_path / "c" / "pages.parquet") in message

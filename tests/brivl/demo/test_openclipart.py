"""OpenClipArt corpus: safe SVG metadata, the catalogue, the apt fetch, the held-out split."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from brivl.demo.holdout import HoldoutConfig, eligible_categories, split_holdout
from brivl.demo.openclipart import (
    CATALOGUE,
    PNG_ROOT,
    SVG_ROOT,
    CorpusUnavailable,
    build_catalogue,
    category_name,
    clean_stem,
    fetch_openclipart,
    load_catalogue,
)
from brivl.demo.svgmeta import read_svg_metadata

GPL = "http://creativecommons.org/licenses/GPL/2.0/"


def test_svg_metadata_reads_title_keywords_creator_and_licence(tmp_path: Path, clipart_tree) -> None:
    svg = tmp_path / "king.svg"
    svg.write_text(clipart_tree.svg_text("Black And White Kings", ["chess", "game", ""], "Daniel Steele", GPL))
    meta = read_svg_metadata(svg)
    assert (meta.title, meta.keywords, meta.creator, meta.licence, meta.error) == (
        "Black And White Kings", ("chess", "game"), "Daniel Steele", GPL, "")


def test_entity_declarations_are_refused_not_expanded(tmp_path: Path, clipart_tree) -> None:
    bomb = tmp_path / "laughs.svg"
    body = clipart_tree.svg_text("TITLE").split("\n", 1)[1].replace("TITLE", "&b; &c;")
    bomb.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;">'
        '<!ENTITY c SYSTEM "file:///etc/passwd">]>\n' + body
    )
    meta = read_svg_metadata(bomb)
    assert meta.error.startswith("refused unsafe XML") and meta.title == ""
    broken = tmp_path / "broken.svg"
    broken.write_text("<svg><metadata>")
    assert read_svg_metadata(broken).error.startswith("not well-formed XML")
    assert read_svg_metadata(tmp_path / "absent.svg").error.startswith("unreadable")


def test_catalogue_of_a_package_tree(tmp_path: Path, clipart_tree) -> None:
    add_picture = clipart_tree.add_picture
    add_picture(tmp_path, "recreation/games/chess/chesspieces-king.png", "Chess King",
                ["chess", "unsorted", "Board_Game"], "Jakob", GPL)
    add_picture(tmp_path, "recreation/games/chess/chess_game_01.png", "", ["unsorted"])
    add_picture(tmp_path, "signs_and_symbols/flags/europe/france_02.png", "Clipart by Nicu "
                "Buculei - tricolore_flag", [], "Nicu Buculei", "")
    add_picture(tmp_path, "unsorted/lonely.png", None)  # no SVG twin
    for k in range(10):  # a collection's shared title names no picture
        add_picture(tmp_path, f"shapes/stars/star_{k}pt.png", "gramastar", ["stars"])
    items = {i.file: i for i in build_catalogue(tmp_path / PNG_ROOT, tmp_path / SVG_ROOT)}
    assert len(items) == 14
    king = items["recreation/games/chess/chesspieces-king.png"]
    assert (king.title, king.title_source, king.keywords, king.creator, king.licence) == (
        "Chess King", "svg", ("chess", "board game"), "Jakob", GPL)
    assert (king.category, king.category_name, king.width, king.height) == (
        "recreation/games/chess", "chess", 24, 24)
    game = items["recreation/games/chess/chess_game_01.png"]
    assert (game.title, game.title_source, game.keywords) == ("chess game", "stem", ())
    flag = items["signs_and_symbols/flags/europe/france_02.png"]
    assert (flag.title, flag.category_name, flag.licence) == ("tricolore flag", "europe flags", "")
    lonely = items["unsorted/lonely.png"]
    assert (lonely.title, lonely.metadata_error) == ("lonely", "no SVG twin")
    assert items["shapes/stars/star_3pt.png"].title == "star 3pt"
    assert len({i.sha256 for i in items.values()}) < len(items)  # the stars are identical


def test_names_from_files_and_folders() -> None:
    assert clean_stem("medicina_dottore_archite_01") == "medicina dottore archite"
    assert clean_stem("01") == "01"
    assert category_name("computer/icons/flat-theme/action") == "action icons"
    assert category_name("recreation/games/cards/white") == "white cards"
    assert category_name("food/breads_and_carbs") == "breads and carbs"


def test_catalogue_is_built_once(tmp_path: Path, clipart_tree) -> None:
    clipart_tree.make_tree(tmp_path)
    first = load_catalogue(tmp_path, fetch=False)
    stamp = (tmp_path / CATALOGUE).stat().st_mtime_ns
    assert load_catalogue(tmp_path, fetch=False) == first
    assert (tmp_path / CATALOGUE).stat().st_mtime_ns == stamp


def _tool(bindir: Path, name: str, body: str) -> None:
    path = bindir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _deb(tmp_path: Path, package: str, kind: str, tree) -> Path:
    """A real .deb holding one file below usr/share/openclipart/<kind>/."""
    src = tmp_path / f"src-{package}"
    (src / "DEBIAN").mkdir(parents=True)
    (src / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1:0.18\nArchitecture: all\nMaintainer: t <t@t>\n"
        "Description: test\n")
    tree.add_picture(src, "animals/cat.png", "Cat")  # writes below src/tree/usr/share/...
    (src / "tree" / "usr").rename(src / "usr")
    kept = "png" if kind == "png" else "svg"
    shutil.rmtree(src / f"usr/share/openclipart/{'svg' if kept == 'png' else 'png'}")
    deb = tmp_path / f"{package}_1%3a0.18_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(src), str(deb)], check=True, capture_output=True)
    return deb


@pytest.mark.skipif(not Path("/usr/bin/dpkg-deb").exists(), reason="needs dpkg-deb")
def test_fetch_updates_missing_lists_once_then_extracts_and_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clipart_tree
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the apt-get update retry runs only as root")
    debs = [_deb(tmp_path, "openclipart-png", "png", clipart_tree),
            _deb(tmp_path, "openclipart-svg", "svg", clipart_tree)]
    bindir, log = tmp_path / "bin", tmp_path / "apt.log"
    bindir.mkdir()
    # an apt-get whose package lists are missing until "apt-get update" ran
    _tool(bindir, "apt-get", f"""echo "$@" >> {log}
if [ "$1" = update ]; then touch {tmp_path}/lists; exit 0; fi
if [ ! -e {tmp_path}/lists ]; then echo "E: Unable to locate package openclipart-png" >&2; exit 100; fi
cp {debs[0]} {debs[1]} .
""")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    cache = tmp_path / "cache"
    assert fetch_openclipart(cache) == cache
    assert log.read_text().splitlines() == [
        "download openclipart-png openclipart-svg", "update",
        "download openclipart-png openclipart-svg"]
    assert [i.title for i in load_catalogue(cache)] == ["Cat"]
    assert not (cache / "debs").exists() and not (cache / "tree.partial").exists()
    fetch_openclipart(cache)  # done: apt is not asked again
    assert len(log.read_text().splitlines()) == 3


def test_fetch_failure_and_missing_apt_raise_corpus_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _tool(bindir, "apt-get", 'echo "E: Failed to fetch http://deb/openclipart.deb" >&2; exit 100\n')
    _tool(bindir, "dpkg-deb", "exit 0\n")
    monkeypatch.setenv("PATH", str(bindir))
    with pytest.raises(CorpusUnavailable, match="apt-get download failed: E: Failed to fetch"):
        fetch_openclipart(tmp_path / "cache")
    assert not (tmp_path / "cache" / "_fetched.json").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(CorpusUnavailable, match="apt-get and dpkg-deb not found"):
        fetch_openclipart(tmp_path / "other")


def test_holdout_takes_whole_categories_and_some_titles(tmp_path: Path, clipart_tree) -> None:
    n = clipart_tree.make_tree(tmp_path)
    items = load_catalogue(tmp_path, fetch=False)
    split = split_holdout(items, HoldoutConfig(category_share=0.1, title_share=0.05))
    eligible = eligible_categories(items, HoldoutConfig())
    assert "unsorted" not in eligible and "shapes/stars" in eligible  # 10 vs 60 pictures
    assert split.categories and set(split.categories) <= set(eligible)
    assert {i.category for i in split.by_category} == set(split.categories)
    # categories are added until they hold 10 %: at most one category's worth beyond it
    assert 0.1 * n <= len(split.by_category) < 0.1 * n + 60
    assert split.by_title and not {i.category for i in split.by_title} & set(split.categories)
    site = {i.file for i in split.site}
    assert not site & {i.file for i in split.heldout}
    assert len(site) + len(split.heldout) + len(split.excluded) == n
    assert split_holdout(items, HoldoutConfig(category_share=0.1, title_share=0.05)) == split

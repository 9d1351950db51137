"""Declared rights: per-image licence links, the page's licence, CC metadata, copyright."""

from __future__ import annotations

from brivl.crawl.parse import parse_page

BY = "https://creativecommons.org/licenses/by/4.0/"
PD = "http://creativecommons.org/licenses/publicdomain/"
SA = "https://creativecommons.org/licenses/by-sa/4.0/"


def licences(html: str) -> dict[str, tuple[str, str, str]]:
    page = parse_page(html, "http://site.test/gallery/")
    return {im.image_url.rsplit("/", 1)[-1]: (im.licence, im.licence_source, im.copyright)
            for im in page.images}


def test_each_layout_gives_its_image_its_own_licence_and_the_rest_the_page_licence() -> None:
    html = f"""<html><head><link rel="license" href="{PD}">
    <meta name="copyright" content="  (c) 2024   Site  Owner "></head><body>
    <header><a rel="license" href="{SA}">site licence</a></header>
    <div class="gallery">
      <figure><img src="a.jpg" alt="a"><figcaption>A fox</figcaption></figure>
      <p class="desc">a fox</p> <small><a rel="license" href="/by">licence</a></small>
      <figure><img src="b.jpg" alt="b"><figcaption>A hen</figcaption></figure>
    </div>
    <div class="card"><img src="c.jpg"><h3>A cat</h3>
      <small><a rel="nofollow license" href="{BY}">licence</a></small></div>
    <table><tr><td><img src="d.jpg"></td><td>A dog <a rel="license" href="{SA}">l</a></td></tr>
    <tr><td><img src="e.jpg"></td><td>An eel</td></tr></table>
    <footer><a rel="license" href="{BY}">Public Domain Dedication</a></footer>
    </body></html>"""
    found = licences(html)
    notice = "(c) 2024 Site Owner"
    assert found == {
        "a.jpg": ("http://site.test/by", "image_link", notice),  # after its figure, resolved
        "b.jpg": (PD, "page_link", notice),  # the footer's link is the page's, not b's
        "c.jpg": (BY, "image_link", notice),
        "d.jpg": (SA, "image_link", notice),  # the next cell of its row
        "e.jpg": (PD, "page_link", notice),
    }


def test_cc_metadata_and_no_declaration() -> None:
    rdfa = f'<html><body><div about="x.jpg"><img src="x.jpg"><span property="dct:license" ' \
           f'resource="{BY}"></span></div></body></html>'
    assert licences(rdfa) == {"x.jpg": (BY, "cc_meta", "")}
    meta = '<html><head><meta name="DC.rights" content="All rights reserved"></head>' \
           '<body><img src="y.jpg"></body></html>'
    assert licences(meta) == {"y.jpg": ("All rights reserved", "cc_meta", "")}
    assert licences('<html><body><img src="z.jpg"></body></html>') == {"z.jpg": ("", "", "")}

"""Read an OpenClipArt SVG's RDF metadata (title, keywords, creator, licence) safely.

The package's SVGs carry a ``<metadata><rdf:RDF><cc:Work>`` block::

    <dc:title>Black And White Kings</dc:title>
    <dc:subject><rdf:Bag><rdf:li>chess</rdf:li>...</rdf:Bag></dc:subject>
    <dc:creator><cc:Agent><dc:title>Daniel Steele</dc:title></cc:Agent></dc:creator>
    <cc:license rdf:resource="http://web.resource.org/cc/PublicDomain"/>

Parsing goes through defusedxml: entity declarations, external entities and DTD tricks are
refused (:class:`SvgMetadata.error` says why) instead of expanded. Matching is by local name
within the Dublin Core / RDF namespaces, so both Creative Commons namespaces work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

DC = "http://purl.org/dc/elements/1.1/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"


@dataclass(frozen=True)
class SvgMetadata:
    """What a ``cc:Work`` says; empty strings/tuple where it says nothing. ``error`` is the
    reason nothing could be read ("" when the metadata was read)."""

    title: str = ""
    keywords: tuple[str, ...] = ()
    creator: str = ""
    licence: str = ""
    error: str = ""


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _text(element: Element | None) -> str:
    return " ".join((element.text or "").split()) if element is not None else ""


def _work(path: Path) -> Element | None:
    """The first ``cc:Work`` element, parsing no further than its end tag."""
    for _event, element in iterparse(str(path), events=("end",)):
        if _local(element.tag) == "Work":
            return element
    return None


def from_work(work: Element) -> SvgMetadata:
    """Title, keywords, creator and licence of a parsed ``cc:Work`` element."""
    title = creator = licence = ""
    keywords: list[str] = []
    for child in work:
        name = _local(child.tag)
        if child.tag == f"{{{DC}}}title":
            title = _text(child)
        elif child.tag == f"{{{DC}}}subject":
            keywords = [_text(li) for li in child.iter(f"{{{RDF}}}li")]
        elif child.tag == f"{{{DC}}}creator":
            creator = _text(child.find(f".//{{{DC}}}title"))
        elif name == "license":
            licence = (child.get(f"{{{RDF}}}resource") or "").strip()
    return SvgMetadata(title, tuple(k for k in keywords if k), creator, licence)


def read_svg_metadata(path: str | Path) -> SvgMetadata:
    """The metadata of one SVG file; a file that cannot be read safely gives ``error``."""
    path = Path(path)
    try:
        work = _work(path)
    except DefusedXmlException as exc:
        return SvgMetadata(error=f"refused unsafe XML ({type(exc).__name__})")
    except ParseError as exc:
        return SvgMetadata(error=f"not well-formed XML ({exc})")
    except OSError as exc:
        return SvgMetadata(error=f"unreadable ({exc.strerror or exc})")
    if work is None:
        return SvgMetadata(error="no cc:Work metadata")
    return from_work(work)

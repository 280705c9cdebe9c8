"""Text corpora behind one interface, byte/char tokenization, an on-disk token cache, and the DataModule.

Corpora:
- ``stdlib_prose``: English prose from the running Python's standard library (module, class and
  function docstrings, read with ``ast`` without importing anything, plus ``pydoc_data.topics``).
- ``stdlib_code``: the standard library's own source without its docstrings (those are the prose
  corpus: a prose -> code shift must not carry the same text on both sides), for domain shift.
- ``tinyshakespeare``: downloaded once over https and checked against its sha256, or read from a path.
- ``textfile``: any local UTF-8 text file.

Splits: a single text (TinyShakespeare, a text file) is split as nanoGPT does, the first 90 % of its
tokens for training and the rest for validation. The standard-library corpora are collections of
documents (a docstring, a help topic, a source file) whose order is the library's file order, so their
validation split is a seeded random 10 % of the documents: every part of the library can land in it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import sys
import sysconfig
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from ablations.files import atomic_file, atomic_write

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TOKENIZERS = ("byte", "char", "bpe")
TRAIN_FRACTION = 0.9  # first 90% train, last 10% validation (nanoGPT's split)
VALIDATION_DOCUMENTS = 0.1  # the share of documents drawn for validation from a collection of documents
SPLIT_SEED = 0  # fixed: one validation sample per corpus, whatever the run's seed


# (path, cache folder) -> (text, documents, separator): a single text has no documents
CorpusLoader = Callable[[str | None, Path], tuple[str, tuple[str, ...], str]]


class CorpusError(ValueError):
    """A corpus that cannot be used: missing, empty, binary, too short, or with the wrong hash."""


@dataclass(frozen=True)
class Corpus:
    name: str
    text: str
    sha256: str
    documents: tuple[str, ...] = ()  # the documents `text` joins, for a corpus split by documents; () splits text
    separator: str = ""  # what joins the documents in `text`

    @property
    def split(self) -> str:
        return "documents" if self.documents else "tail"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stdlib_sources() -> list[Path]:
    """The standard library's .py files in a fixed order, without tests, IDLE and third-party packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skipped = {"site-packages", "dist-packages", "idlelib", "lib2to3", "__pycache__"}

    def keep(path: Path) -> bool:
        parts = path.relative_to(root).parts
        return not any(p in skipped or p.startswith("test") for p in parts)

    return sorted(p for p in root.rglob("*.py") if keep(p))


DOCUMENT_SEPARATOR = "\n\n"


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _documented(tree: ast.AST) -> Iterator[ast.AST]:
    """The modules, classes and functions of a tree that open with a docstring."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.body and _is_docstring(node.body[0]):
                yield node


def _parsed_sources() -> Iterator[tuple[Path, str, ast.AST | None]]:
    for path in _stdlib_sources():
        source = path.read_text(encoding="utf-8", errors="replace")
        try:
            yield path, source, ast.parse(source)
        except SyntaxError:
            yield path, source, None


def stdlib_prose_documents() -> list[str]:
    import pydoc_data.topics

    docstrings = [ast.get_docstring(node) for _, _, tree in _parsed_sources() if tree for node in _documented(tree)]
    topics = pydoc_data.topics.topics
    return [doc for doc in docstrings if doc] + [topics[key] for key in sorted(topics)]


def without_docstrings(source: str, tree: ast.AST) -> str:
    """The source with the lines of its docstrings removed (`pass` where a body would be left empty). A docstring
    that shares a line with other code is kept."""
    lines = source.splitlines(keepends=True)
    for node in sorted(_documented(tree), key=lambda n: -n.body[0].lineno):  # bottom-up: line numbers stay valid
        doc = node.body[0]
        start, end = doc.lineno - 1, doc.end_lineno
        if lines[start][: doc.col_offset].strip() or lines[end - 1][doc.end_col_offset :].strip():
            continue
        filler = [" " * doc.col_offset + "pass\n"] if len(node.body) == 1 else []
        lines[start:end] = filler
    return "".join(lines)


def stdlib_code_documents() -> list[str]:
    return [
        f"# file: {path.name}\n{source if tree is None else without_docstrings(source, tree)}\n"
        for path, source, tree in _parsed_sources()
    ]


def download(url: str, dest: Path, sha256: str) -> Path:
    """Fetch `url` to `dest` unless it is already there; refuse anything whose hash is not `sha256`.

    Only https (and file:// for a local mirror) is accepted; nothing is written unless the hash matches.
    """
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("https", "file"):
        raise CorpusError(f"refusing to download {url!r}: only https:// (or a local file://) is allowed")
    if dest.exists() and sha256_bytes(dest.read_bytes()) == sha256:
        return dest
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (scheme checked above)
        data = response.read()
    if (actual := sha256_bytes(data)) != sha256:
        raise CorpusError(f"{url} has sha256 {actual}, expected {sha256}; nothing was saved")
    atomic_write(dest, data)
    return dest


def read_text_file(path: str | Path) -> str:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CorpusError(f"corpus file {str(path)!r} does not exist")
    data = path.read_bytes()
    if not data.strip():
        raise CorpusError(f"corpus file {str(path)!r} is empty")
    if b"\x00" in data:
        raise CorpusError(f"corpus file {str(path)!r} is binary (contains NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"corpus file {str(path)!r} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _tinyshakespeare(path: str | None, cache_dir: Path) -> str:
    if path is None:
        path = download(TINYSHAKESPEARE_URL, cache_dir / "tinyshakespeare.txt", TINYSHAKESPEARE_SHA256)
    text = read_text_file(path)
    if (actual := sha256_bytes(text.encode())) != TINYSHAKESPEARE_SHA256:
        raise CorpusError(f"{path} is not TinyShakespeare (sha256 {actual}); use data=textfile for other text")
    return text


def _textfile(path: str | None, cache_dir: Path) -> str:
    if path is None:
        raise CorpusError("data=textfile needs data.path=/path/to/file.txt")
    return read_text_file(path)


def _built(builder: Callable[[], list[str]], name: str, separator: str, end: str) -> CorpusLoader:
    """A corpus of documents built from this Python's standard library, cached per Python version."""

    def load(path: str | None, cache_dir: Path) -> tuple[str, tuple[str, ...], str]:
        version = ".".join(str(part) for part in sys.version_info[:3])
        cached = cache_dir / f"{name}-py{version}.json"
        if not cached.exists():
            atomic_write(cached, json.dumps(builder()).encode())
        documents = tuple(json.loads(cached.read_text(encoding="utf-8")))
        return separator.join(documents) + end, documents, separator

    return load


def _single_text(read: Callable[[str | None, Path], str]) -> CorpusLoader:
    return lambda path, cache_dir: (read(path, cache_dir), (), "")


CORPORA: dict[str, CorpusLoader] = {
    "stdlib_prose": _built(stdlib_prose_documents, "stdlib_prose", DOCUMENT_SEPARATOR, "\n"),
    "stdlib_code": _built(stdlib_code_documents, "stdlib_code", "", ""),
    "tinyshakespeare": _single_text(_tinyshakespeare),
    "textfile": _single_text(_textfile),
}


def load_corpus(name: str, path: str | None = None, cache_dir: str | Path = ".cache") -> Corpus:
    if name not in CORPORA:
        raise CorpusError(f"unknown corpus {name!r}; valid: {', '.join(sorted(CORPORA))}")
    text, documents, separator = CORPORA[name](path, Path(cache_dir))
    return Corpus(name, text, sha256_bytes(text.encode()), documents, separator)


@dataclass(frozen=True)
class TokenizedCorpus:
    corpus: str
    sha256: str
    tokenizer: str
    split: str  # "tail" or "documents" (Corpus.split)
    vocab: str  # char: the characters in id order; bpe: the trained tokenizer as JSON; bytes: empty
    train: np.ndarray
    val: np.ndarray

    @property
    def vocab_size(self) -> int:
        if self.tokenizer == "bpe":
            return Tokenizer.from_str(self.vocab).get_vocab_size()
        return 256 if self.tokenizer == "byte" else len(self.vocab)

    def decode(self, ids: list[int]) -> str:
        if self.tokenizer == "byte":
            return bytes(ids).decode("utf-8", errors="replace")
        if self.tokenizer == "bpe":
            return Tokenizer.from_str(self.vocab).decode(ids)
        return "".join(self.vocab[i] for i in ids)


def validation_documents(n_documents: int) -> np.ndarray:
    """The sorted indices of the documents drawn for validation: a fixed random VALIDATION_DOCUMENTS share."""
    rng = np.random.default_rng(SPLIT_SEED)
    drawn = max(1, round(n_documents * VALIDATION_DOCUMENTS))
    return np.sort(rng.choice(n_documents, size=drawn, replace=False))


def split_texts(corpus: Corpus) -> tuple[str, str]:
    """The training and validation text of a corpus split by documents, each joined as the corpus joins them."""
    validation = set(validation_documents(len(corpus.documents)).tolist())
    parts: tuple[list[str], list[str]] = ([], [])
    for i, document in enumerate(corpus.documents):
        parts[i in validation].append(document)
    return corpus.separator.join(parts[0]), corpus.separator.join(parts[1])


def _encode(text: str, tokenizer: str, lookup: dict[str, int]) -> np.ndarray:
    if tokenizer == "byte":
        return np.frombuffer(text.encode(), dtype=np.uint8)
    return np.fromiter((lookup[ch] for ch in text), dtype=np.uint16, count=len(text))


def train_bpe(text: str, vocab_size: int) -> Tokenizer:
    """A byte-level BPE (GPT-2's scheme: bytes as the base alphabet, merges learned from the text), trained with
    Hugging Face `tokenizers` on `text`, which must be the training split alone."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False)
    tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer)
    return tokenizer


def _split_text(corpus: Corpus) -> tuple[str, str]:
    """Training and validation text: by documents, or the first TRAIN_FRACTION of the characters and the rest."""
    if corpus.documents:
        return split_texts(corpus)
    cut = int(len(corpus.text) * TRAIN_FRACTION)
    return corpus.text[:cut], corpus.text[cut:]


def _bpe_splits(corpus: Corpus, vocab_size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Both splits encoded by a BPE trained on the training split only: no validation text shapes the merges."""
    train_text, val_text = _split_text(corpus)
    tokenizer = train_bpe(train_text, vocab_size)
    train, val = (np.array(tokenizer.encode(text).ids, dtype=np.uint16) for text in (train_text, val_text))
    return train, val, tokenizer.to_str()


def tokenize(
    corpus: Corpus, tokenizer: str, cache_dir: str | Path = ".cache", bpe_vocab_size: int | None = None
) -> TokenizedCorpus:
    """Token ids of the train and validation splits, read from the cache when present."""
    if tokenizer not in TOKENIZERS:
        raise CorpusError(f"unknown tokenizer {tokenizer!r}; valid: {', '.join(TOKENIZERS)}")
    if (tokenizer == "bpe") != (bpe_vocab_size is not None):
        raise CorpusError("data.tokenizer=bpe needs data.bpe_vocab_size (and only bpe takes one)")
    name = f"{tokenizer}{bpe_vocab_size or ''}"
    cached = Path(cache_dir) / f"tokens-{corpus.sha256[:16]}-{name}-{corpus.split}.npz"
    if not cached.exists():
        if tokenizer == "bpe":
            train, val, vocab = _bpe_splits(corpus, bpe_vocab_size)
        else:
            vocab = "" if tokenizer == "byte" else "".join(sorted(set(corpus.text)))
            lookup = {ch: i for i, ch in enumerate(vocab)}
            if corpus.documents:
                train, val = (_encode(text, tokenizer, lookup) for text in split_texts(corpus))
            else:
                ids = _encode(corpus.text, tokenizer, lookup)
                n_train = int(len(ids) * TRAIN_FRACTION)
                train, val = ids[:n_train], ids[n_train:]
        with atomic_file(cached) as tmp:
            np.savez(tmp, train=train, val=val, vocab=np.array(vocab))
    with np.load(cached) as arrays:
        return TokenizedCorpus(
            corpus=corpus.name,
            sha256=corpus.sha256,
            tokenizer=tokenizer,
            split=corpus.split,
            vocab=str(arrays["vocab"]),
            train=arrays["train"],
            val=arrays["val"],
        )


class RandomWindows(IterableDataset):
    """An endless stream of batches of random (input, next-token target) windows, as nanoGPT samples them."""

    def __init__(self, tokens: torch.Tensor, block_size: int, batch_size: int, seed: int):
        self.windows = tokens.unfold(0, block_size + 1, 1)  # a view: no copy of the corpus
        self.batch_size, self.seed = batch_size, seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            batch = self.windows[torch.randint(len(self.windows), (self.batch_size,), generator=generator)]
            yield batch[:, :-1], batch[:, 1:]


class RankShare(IterableDataset):
    """Rows rank, rank + ranks, rank + 2 ranks, ... of every batch of `stream` (one data-parallel rank's share)."""

    def __init__(self, stream: IterableDataset, rank: int, ranks: int):
        self.stream, self.rank, self.ranks = stream, rank, ranks

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.stream:
            yield x[self.rank :: self.ranks], y[self.rank :: self.ranks]


def parse_mix(mix: str) -> float:
    """The domain share of a "domain:general" ratio ("1:5" -> 1/6 of the windows from the domain corpus)."""
    try:
        domain, general = (float(part) for part in mix.split(":"))
    except ValueError:
        raise ValueError(f"data.mix={mix!r} must be a ratio domain:general such as 1:5") from None
    if domain < 0 or general < 0 or domain + general == 0:
        raise ValueError(f"data.mix={mix!r} must have non-negative parts, not both 0")
    return domain / (domain + general)


class MixedWindows(IterableDataset):
    """Batches of random windows from two token streams, `share` of them from the first.

    The split is exact over the run rather than drawn at random: after k batches, floor(k * batch_size *
    share) windows have come from the first stream, so the realized ratio never drifts from its target.
    """

    def __init__(self, first: torch.Tensor, second: torch.Tensor, block_size: int, batch_size: int, share: float,
                 seed: int):  # fmt: skip
        self.first, self.second = first.unfold(0, block_size + 1, 1), second.unfold(0, block_size + 1, 1)
        self.batch_size, self.share, self.seed = batch_size, share, seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        step = 0
        while True:
            n_first = math.floor((step + 1) * self.batch_size * self.share) - math.floor(
                step * self.batch_size * self.share
            )
            batch = torch.cat(
                [
                    self.first[torch.randint(len(self.first), (n_first,), generator=generator)],
                    self.second[torch.randint(len(self.second), (self.batch_size - n_first,), generator=generator)],
                ]
            )
            step += 1
            yield batch[:, :-1], batch[:, 1:]


def evaluation_windows(tokens: torch.Tensor, block_size: int, limit: int | None = None) -> TensorDataset:
    """Non-overlapping windows covering the split; with `limit`, that many spread evenly over it."""
    windows = tokens[: (len(tokens) - 1) // block_size * block_size + 1]
    starts = torch.arange(0, len(windows) - 1, block_size)
    if limit is not None and limit < len(starts):
        starts = starts[torch.linspace(0, len(starts) - 1, limit).long()]
    batch = torch.stack([tokens[s : s + block_size + 1] for s in starts.tolist()])
    return TensorDataset(batch[:, :-1], batch[:, 1:])


IGNORE = -100  # target id of padding: cross_entropy's ignore_index, so padding never enters a loss
PACKINGS = ("windows", "documents", "fixed", "buckets", "sorted")
EPOCH_PACKINGS = ("fixed", "buckets", "sorted")  # finite passes over the documents, batched by DocumentBatches


def documents(ids: np.ndarray, newline: int, max_tokens: int) -> list[np.ndarray]:
    """The paragraphs of a token stream (split where two newlines meet), each cut to max_tokens."""
    is_newline = ids == newline
    starts = np.flatnonzero(is_newline[:-1] & is_newline[1:]) + 2
    return [doc[:max_tokens] for doc in np.split(ids, starts) if len(doc) >= 2]


def pad_batch(docs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs padded with 0 and targets with IGNORE, to the longest document of the batch."""
    width = max(len(d) for d in docs) - 1
    x = torch.zeros(len(docs), width, dtype=torch.long)
    y = torch.full((len(docs), width), IGNORE, dtype=torch.long)
    for i, doc in enumerate(docs):
        x[i, : len(doc) - 1], y[i, : len(doc) - 1] = doc[:-1], doc[1:]
    return x, y


class RandomDocuments(IterableDataset):
    """An endless stream of padded batches of documents drawn at random (variable-length training)."""

    def __init__(self, docs: list[torch.Tensor], batch_size: int, seed: int):
        self.docs, self.batch_size, self.seed = docs, batch_size, seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            picks = torch.randint(len(self.docs), (self.batch_size,), generator=generator).tolist()
            yield pad_batch([self.docs[i] for i in picks])


class DocumentBatches(torch.utils.data.Sampler[list[int]]):
    """Batches of document indices covering every document once per epoch, redrawn each epoch.

    fixed:   a random permutation cut into batches of `batch_size` documents (padded to the longest)
    buckets: documents sorted by length (random order among equal lengths) and cut greedily into
             batches whose padded size, documents x longest input, stays within `max_tokens`; the
             batches are then shuffled, so consecutive batches come from different length buckets
    sorted:  the same token-budget batches, shortest first, never shuffled
    """

    def __init__(self, lengths: list[int], mode: str, batch_size: int, max_tokens: int, seed: int):
        if mode not in EPOCH_PACKINGS:
            raise ValueError(f"batching mode {mode!r} must be one of {EPOCH_PACKINGS}")
        if mode != "fixed" and max_tokens < max(lengths) - 1:
            raise ValueError(f"data.max_tokens={max_tokens} is below the longest input ({max(lengths) - 1} tokens)")
        self.lengths, self.mode, self.batch_size, self.max_tokens, self.seed = (
            lengths,
            mode,
            batch_size,
            max_tokens,
            seed,
        )
        self.epoch = 0

    def batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        if self.mode == "fixed":
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        order.sort(key=lambda i: self.lengths[i])  # stable: equal lengths keep their random order
        batches, batch, longest = [], [], 0
        for i in order:
            width = max(longest, self.lengths[i] - 1)  # a document of n tokens is n - 1 inputs
            if batch and (len(batch) + 1) * width > self.max_tokens:
                batches.append(batch)
                batch, width = [], self.lengths[i] - 1
            batch.append(i)
            longest = width
        batches.append(batch)
        if self.mode == "buckets":
            batches = [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches(self.epoch)
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        return len(self.batches(0))


class PaddedDocuments(torch.utils.data.Dataset):
    """Every document once, in order, as padded batches (evaluation)."""

    def __init__(self, docs: list[torch.Tensor], batch_size: int, limit: int | None = None):
        if limit is not None and limit < len(docs):
            docs = [docs[i] for i in torch.linspace(0, len(docs) - 1, limit).long().tolist()]
        self.batches = [pad_batch(docs[i : i + batch_size]) for i in range(0, len(docs), batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batches[i]


class TextDataModule(pl.LightningDataModule):
    """A corpus tokenized, split and served as Lightning's loaders.

    packing: "windows" cuts the stream into fixed-length windows; "documents" keeps paragraphs
    at their natural length (cut at block_size + 1 tokens), `batch_size` drawn at random per batch
    and padded to the longest; "fixed", "buckets" and "sorted" pass over every paragraph once per
    epoch in batches from DocumentBatches (max_tokens: the padded-size budget of a batch).
    max_documents: train on the first that many paragraphs only (the smoke tier's short epochs).
    count_epochs_as: an epoch-based packing whose epochs count the steps (`epochs` of "fixed" batches of
    `batch_size`: as many updates as those), while batches come from `packing`; null: `packing` itself.

    domain: a second corpus for continued training (`domain_path` if it needs a path). Training
    windows then mix it with `corpus` at `mix` = "domain:general" (MixedWindows), and validation
    scores both: `corpus` as val_loss, the domain as domain_val_loss. Both corpora must share the
    byte vocabulary.

    bpe_vocab_size: with tokenizer "bpe", the size of the byte-level BPE vocabulary trained on the training
    split (windows packing only).

    train_tokens_limit: train on the first that many tokens of the training split only (windows packing): a
    small corpus seen for many epochs, where a model over-fits. domain_tokens_limit: the same for the domain's
    training split (a small target set to fine-tune on, E24)."""

    def __init__(
        self,
        corpus: str,
        tokenizer: str = "byte",
        path: str | None = None,
        block_size: int = 64,
        batch_size: int = 12,
        eval_batch_size: int = 64,
        eval_windows: int = 256,
        test_windows: int | None = None,
        seed: int = 0,
        cache_dir: str = ".cache",
        packing: str = "windows",
        max_tokens: int = 2048,
        epochs: int | None = None,
        max_documents: int | None = None,
        count_epochs_as: str | None = None,
        domain: str | None = None,
        domain_path: str | None = None,
        mix: str | None = None,
        bpe_vocab_size: int | None = None,
        train_tokens_limit: int | None = None,
        domain_tokens_limit: int | None = None,
    ):
        super().__init__()
        if tokenizer == "bpe" and packing != "windows":
            raise ValueError("data.tokenizer=bpe needs data.packing=windows")
        self.bpe_vocab_size = bpe_vocab_size
        if train_tokens_limit is not None and (packing != "windows" or domain is not None or train_tokens_limit <= 0):
            raise ValueError("data.train_tokens_limit needs a positive count, data.packing=windows and no data.domain")
        self.train_tokens_limit = train_tokens_limit
        if domain_tokens_limit is not None and (domain is None or domain_tokens_limit <= block_size):
            raise ValueError("data.domain_tokens_limit needs a data.domain and more tokens than one window")
        self.domain_tokens_limit = domain_tokens_limit
        self.domain_share = 0.0
        if domain is not None:
            if tokenizer != "byte":
                raise ValueError("data.domain needs data.tokenizer=byte, so that both corpora share one vocabulary")
            if packing != "windows":
                raise ValueError("data.domain needs data.packing=windows")
            self.domain_share = parse_mix(mix or "1:0")
        elif mix is not None:
            raise ValueError("data.mix needs data.domain, the corpus mixed with data.corpus")
        self.domain_name, self.domain_path = domain, domain_path
        self.domain_tokens: TokenizedCorpus | None = None
        if packing not in PACKINGS:
            raise ValueError(f"data.packing={packing!r} must be one of {PACKINGS}")
        self.packing, self.max_tokens, self.epochs, self.max_documents = packing, max_tokens, epochs, max_documents
        if epochs is not None and packing not in EPOCH_PACKINGS:
            raise ValueError(f"data.epochs needs an epoch-based data.packing ({', '.join(EPOCH_PACKINGS)})")
        if count_epochs_as is not None and (count_epochs_as not in EPOCH_PACKINGS or epochs is None):
            raise ValueError(f"data.count_epochs_as={count_epochs_as!r} needs data.epochs and one of {EPOCH_PACKINGS}")
        self.count_epochs_as = count_epochs_as
        self.corpus_name, self.tokenizer, self.path = corpus, tokenizer, path
        self.block_size, self.batch_size, self.eval_batch_size = block_size, batch_size, eval_batch_size
        self.eval_windows, self.test_windows, self.seed, self.cache_dir = eval_windows, test_windows, seed, cache_dir
        self.tokens: TokenizedCorpus | None = None

    def prepare_data(self) -> None:
        self.load()

    def load(self) -> TokenizedCorpus:
        if self.tokens is None:
            corpus = load_corpus(self.corpus_name, self.path, self.cache_dir)
            tokens = tokenize(corpus, self.tokenizer, self.cache_dir, self.bpe_vocab_size)
            for split in ("train", "val"):
                n = len(getattr(tokens, split))
                if n <= self.block_size:
                    raise CorpusError(
                        f"corpus {self.corpus_name!r} is too short: its {split} split has {n} tokens, "
                        f"fewer than one window of data.block_size+1={self.block_size + 1}"
                    )
            self.tokens = tokens
        if self.domain_name is not None and self.domain_tokens is None:
            corpus = load_corpus(self.domain_name, self.domain_path, self.cache_dir)
            self.domain_tokens = tokenize(corpus, self.tokenizer, self.cache_dir)
            if min(len(self.domain_tokens.train), len(self.domain_tokens.val)) <= self.block_size:
                raise CorpusError(f"domain corpus {self.domain_name!r} is too short for one window")
        return self.tokens

    def setup(self, stage: str | None = None) -> None:
        tokens = self.load()
        self.train_ids = torch.from_numpy(tokens.train[: self.train_tokens_limit].astype(np.int64))
        self.val_ids = torch.from_numpy(tokens.val.astype(np.int64))
        if self.domain_tokens is not None:
            domain_train = self.domain_tokens.train[: self.domain_tokens_limit]
            self.domain_train_ids = torch.from_numpy(domain_train.astype(np.int64))
            self.domain_val_ids = torch.from_numpy(self.domain_tokens.val.astype(np.int64))
        if self.packing != "windows":
            newline = ord("\n") if tokens.tokenizer == "byte" else tokens.vocab.index("\n")
            self.train_docs, self.val_docs = (
                [torch.from_numpy(d.astype(np.int64)) for d in documents(split, newline, self.block_size + 1)]
                for split in (tokens.train, tokens.val)
            )
            self.train_docs = self.train_docs[: self.max_documents]

    def probe_batch(self, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed training batch, the same for every arm and seed, for probes to measure on."""
        return next(iter(RandomWindows(self.train_ids, self.block_size, size or self.batch_size, seed=2**31 - 1)))

    def document_batches(self, packing: str | None = None) -> DocumentBatches:
        """The training batches of `packing` (default: data.packing) over this corpus's documents."""
        lengths = [len(d) for d in self.train_docs]
        return DocumentBatches(lengths, packing or self.packing, self.batch_size, self.max_tokens, self.seed)

    def steps_per_epoch(self) -> int:
        """Updates per epoch: of data.packing, or of data.count_epochs_as where that counts the epochs."""
        self.setup()
        return len(self.document_batches(self.count_epochs_as))

    def train_dataloader(self) -> DataLoader:
        if self.packing in EPOCH_PACKINGS:
            return DataLoader(self.train_docs, batch_sampler=self.document_batches(), collate_fn=pad_batch)
        # Data-parallel ranks each take their share of the batch one process with the global batch would draw:
        # n ranks of batch_size train on exactly the data of one process of n x batch_size.
        ranks = self.trainer.world_size if self.trainer is not None else 1
        size = self.batch_size * ranks
        if self.packing == "documents":
            stream = RandomDocuments(self.train_docs, size, self.seed)
        elif self.domain_tokens is not None:
            stream = MixedWindows(self.domain_train_ids, self.train_ids, self.block_size, size, self.domain_share,
                                  self.seed)  # fmt: skip
        else:
            stream = RandomWindows(self.train_ids, self.block_size, size, self.seed)
        if ranks > 1:
            stream = RankShare(stream, self.trainer.global_rank, ranks)
        return DataLoader(stream, batch_size=None)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """A fixed, evenly spread subset of the validation split, for the periodic curve."""
        return self._evaluation(self.eval_windows)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """The whole validation split (test_windows: that many, spread evenly), for the final figures verdicts use."""
        return self._evaluation(self.test_windows)

    def _evaluation(self, limit: int | None) -> DataLoader | list[DataLoader]:
        """The validation split (limit: that many windows or documents); with a domain, [corpus, domain]."""
        if self.packing != "windows":
            return DataLoader(PaddedDocuments(self.val_docs, self.eval_batch_size, limit), batch_size=None)
        splits = [self.val_ids] + ([self.domain_val_ids] if self.domain_tokens is not None else [])
        loaders = [
            DataLoader(evaluation_windows(ids, self.block_size, limit), batch_size=self.eval_batch_size)
            for ids in splits
        ]
        return loaders if self.domain_tokens is not None else loaders[0]

import ast
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from ablations import data
from ablations.data import CorpusError, RandomWindows, TextDataModule, evaluation_windows, load_corpus, tokenize


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_stdlib_prose_is_english_prose_of_about_two_megabytes_and_deterministic(cache_dir):
    documents = data.stdlib_prose_documents()
    text = data.DOCUMENT_SEPARATOR.join(documents) + "\n"
    assert 1_000_000 < len(text) < 5_000_000
    assert "Return" in text and "def " not in text[:10_000]
    # same Python, same bytes: the session's cached copy (built again if this test runs first) is identical
    corpus = load_corpus("stdlib_prose", cache_dir=cache_dir)
    assert (corpus.text, corpus.documents, corpus.split) == (text, tuple(documents), "documents")


def test_corpus_hash_is_the_sha256_of_its_text_and_the_built_text_is_cached(cache_dir, monkeypatch):
    corpus = load_corpus("stdlib_prose", cache_dir=cache_dir)
    assert corpus.sha256 == hashlib.sha256(corpus.text.encode()).hexdigest()
    assert len(list(Path(cache_dir).glob("stdlib_prose-py*.json"))) == 1
    fail = lambda: pytest.fail("built again despite the cache")  # noqa: E731
    monkeypatch.setitem(data.CORPORA, "stdlib_prose", data._built(fail, "stdlib_prose", "\n\n", "\n"))
    assert load_corpus("stdlib_prose", cache_dir=cache_dir).sha256 == corpus.sha256


def test_stdlib_code_is_python_source_without_the_docstrings_that_make_the_prose_corpus(cache_dir):
    corpus = load_corpus("stdlib_code", cache_dir=cache_dir)  # built once per test session, as E09 needs it
    assert len(corpus.text) > 5_000_000 and "def " in corpus.text and "import " in corpus.text
    assert corpus.text == "".join(corpus.documents) and corpus.documents[0].startswith("# file: ")
    # the module docstring of json/__init__.py opens with this sentence; the prose corpus has it, the code not
    sentence = "JSON (JavaScript Object Notation)"
    assert sentence in load_corpus("stdlib_prose", cache_dir=cache_dir).text and sentence not in corpus.text


def test_docstrings_are_removed_line_by_line_and_an_emptied_body_gets_pass():
    source = (
        '"""Module doc."""\nimport os\n\n\nclass A:\n    """Class doc\n    on two lines."""\n\n    x = 1\n\n'
        '    def f(self):\n        """Only a docstring."""\n\n\ndef g(): "kept: shares its line"\n'
    )
    stripped = data.without_docstrings(source, ast.parse(source))
    assert stripped == (
        'import os\n\n\nclass A:\n\n    x = 1\n\n    def f(self):\n        pass\n\n\ndef g(): "kept: shares its line"\n'
    )
    ast.parse(stripped)


def test_a_collection_of_documents_is_split_by_a_fixed_random_sample_of_documents(tmp_path):
    documents = tuple(f"document {i:03d}" for i in range(200))
    text = "\n\n".join(documents) + "\n"
    corpus = data.Corpus("d", text, data.sha256_bytes(text.encode()), documents, "\n\n")
    drawn = data.validation_documents(200)
    assert len(drawn) == 20 and len(set(drawn.tolist())) == 20
    np.testing.assert_array_equal(drawn, data.validation_documents(200))  # whatever the run's seed
    train, val = (bytes(ids).decode() for ids in (lambda t: (t.train, t.val))(tokenize(corpus, "byte", tmp_path)))
    assert val == "\n\n".join(documents[i] for i in drawn)
    assert train == "\n\n".join(d for i, d in enumerate(documents) if i not in set(drawn.tolist()))
    assert list(tmp_path.glob("tokens-*-byte-documents.npz"))


def test_the_stdlib_validation_split_draws_from_every_part_of_the_corpus(cache_dir):
    """The last 10 % of stdlib_prose is all pydoc topics: the validation sample must reach every tenth of it."""
    corpus = load_corpus("stdlib_prose", cache_dir=cache_dir)
    drawn = data.validation_documents(len(corpus.documents))
    tenths = set((drawn * 10 // len(corpus.documents)).tolist())
    assert tenths == set(range(10))
    tokens = tokenize(corpus, "byte", cache_dir)
    assert 0.07 < len(tokens.val) / (len(tokens.train) + len(tokens.val)) < 0.13
    assert tokens.split == "documents"


def test_split_is_first_ninety_percent_then_the_rest(tmp_path):
    text = "abcdefghij" * 100
    corpus = data.Corpus("t", text, data.sha256_bytes(text.encode()))
    tokens = tokenize(corpus, "char", tmp_path)
    assert len(tokens.train) == 900 and len(tokens.val) == 100
    assert tokens.vocab == "abcdefghij" and tokens.vocab_size == 10
    assert tokens.decode(list(tokens.val[:10])) == "abcdefghij"
    byte_tokens = tokenize(corpus, "byte", tmp_path)
    assert byte_tokens.vocab_size == 256 and bytes(byte_tokens.train[:3]) == b"abc"


def test_tokenized_arrays_are_cached_and_reused(tmp_path, monkeypatch):
    text = "hello world\n" * 200
    corpus = data.Corpus("t", text, data.sha256_bytes(text.encode()))
    first = tokenize(corpus, "char", tmp_path)
    cached = list(tmp_path.glob("tokens-*-char-tail.npz"))
    assert len(cached) == 1
    # A second call must read the cache, not re-tokenize: make tokenizing impossible and call again.
    monkeypatch.setattr(data.np, "fromiter", lambda *a, **k: pytest.fail("re-tokenized despite the cache"))
    second = tokenize(corpus, "char", tmp_path)
    np.testing.assert_array_equal(first.train, second.train)


def test_local_text_file_corpus(tmp_path):
    path = write(tmp_path / "a.txt", b"some text here\n" * 100)
    corpus = load_corpus("textfile", str(path), tmp_path)
    assert corpus.text.startswith("some text")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"\x00\x01\x02binary", "binary"),
        (b"\xff\xfe\xfa text", "not UTF-8"),
    ],
)
def test_bad_corpus_files_are_refused_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        load_corpus("textfile", str(path), tmp_path)


def test_a_corpus_too_short_for_one_window_is_refused(tmp_path):
    path = write(tmp_path / "short.txt", b"too short for a window of 64\n")
    module = TextDataModule("textfile", path=str(path), block_size=64, cache_dir=str(tmp_path))
    with pytest.raises(CorpusError, match="too short"):
        module.load()


def test_unknown_corpus_and_tokenizer_list_the_valid_ones(tmp_path):
    with pytest.raises(CorpusError, match="valid: .*stdlib_prose"):
        load_corpus("wikipedia", cache_dir=tmp_path)
    corpus = data.Corpus("t", "abc" * 100, "0" * 64)
    with pytest.raises(CorpusError, match="valid: byte, char, bpe"):
        tokenize(corpus, "wordpiece", tmp_path)
    with pytest.raises(CorpusError, match="bpe needs data.bpe_vocab_size"):
        tokenize(corpus, "bpe", tmp_path)


def test_bpe_is_trained_on_the_training_split_alone_and_decodes_back(tmp_path):
    """The merges come from the first 90 % of the text: a different validation text leaves them unchanged."""
    words = " ".join(f"token{i % 37} word{i % 11}" for i in range(3000))
    words += "\n" * (9 - len(words) % 9)  # a multiple of 9 characters: exactly the first 90 % of words + tail
    tails = [("validation text one " * 400)[: len(words) // 9], ("entirely different words " * 400)[: len(words) // 9]]
    corpora = [data.Corpus("t", words + tail, data.sha256_bytes((words + tail).encode())) for tail in tails]
    first, second = (tokenize(c, "bpe", tmp_path / str(i), bpe_vocab_size=300) for i, c in enumerate(corpora))
    assert first.vocab == second.vocab and 256 < first.vocab_size <= 300  # bytes, then merges (as many as the text has)
    assert np.array_equal(first.train, second.train)
    assert first.decode(list(first.val)) == tails[0] and first.decode(list(first.train)) == words
    assert len(first.train) < len(words) / 2  # merges: fewer tokens than characters


def test_download_checks_the_hash_and_saves_nothing_on_a_mismatch(tmp_path):
    source = write(tmp_path / "source.txt", b"First Citizen:\nBefore we proceed any further, hear me speak.\n")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "corpus.txt"
    with pytest.raises(CorpusError, match="expected"):
        data.download(source.as_uri(), dest, "0" * 64)
    assert not dest.parent.exists() or not any(dest.parent.iterdir())  # nothing cached, not even a temp file
    assert data.download(source.as_uri(), dest, digest) == dest
    assert dest.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("url", ["http://example.com/input.txt", "ftp://example.com/input.txt"])
def test_download_refuses_anything_but_https(tmp_path, url):
    with pytest.raises(CorpusError, match="only https"):
        data.download(url, tmp_path / "x.txt", "0" * 64)


def test_tinyshakespeare_from_a_path_must_match_its_hash(tmp_path):
    wrong = write(tmp_path / "input.txt", b"not shakespeare at all\n" * 100)
    with pytest.raises(CorpusError, match="is not TinyShakespeare"):
        load_corpus("tinyshakespeare", str(wrong), tmp_path)


def test_tinyshakespeare_address_is_the_documented_https_one():
    assert data.TINYSHAKESPEARE_URL.startswith("https://raw.githubusercontent.com/karpathy/char-rnn/")


def test_random_windows_are_deterministic_per_seed_and_targets_are_shifted_inputs():
    tokens = torch.arange(1000)
    a = next(iter(RandomWindows(tokens, 8, 4, seed=1)))
    b = next(iter(RandomWindows(tokens, 8, 4, seed=1)))
    c = next(iter(RandomWindows(tokens, 8, 4, seed=2)))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a[0], c[0])
    x, y = a
    assert x.shape == (4, 8) and torch.equal(y, x + 1)


def test_evaluation_windows_cover_the_split_without_overlap():
    tokens = torch.arange(1001)
    windows = evaluation_windows(tokens, block_size=10)
    assert len(windows) == 100
    x, y = windows.tensors
    assert torch.equal(x.flatten(), torch.arange(1000)) and torch.equal(y.flatten(), torch.arange(1, 1001))
    assert len(evaluation_windows(tokens, block_size=10, limit=7)) == 7


def test_documents_are_paragraphs_cut_at_the_context():
    from ablations.data import documents

    ids = np.frombuffer(b"one para\n\ntwo\nlines here\n\nthree is a long paragraph", dtype=np.uint8)
    docs = [bytes(d) for d in documents(ids, ord("\n"), max_tokens=12)]
    assert docs == [b"one para\n\n", b"two\nlines he", b"three is a l"]


def test_padded_batches_ignore_padding_in_the_targets():
    from ablations.data import IGNORE, pad_batch

    x, y = pad_batch([torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6])])
    assert x.tolist() == [[1, 2, 3], [5, 0, 0]]
    assert y.tolist() == [[2, 3, 4], [6, IGNORE, IGNORE]]


def test_padding_does_not_change_the_loss():
    """A causal model never attends to the padding after a document, and the loss ignores it."""
    import torch.nn.functional as F

    from ablations.data import pad_batch
    from ablations.model import GPT, ModelConfig

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, d_model=16)).eval()
    short = torch.randint(20, (5,))
    alone = pad_batch([short])
    padded = pad_batch([short, torch.randint(20, (12,))])
    loss = {name: F.cross_entropy(model(x[:1]).flatten(0, 1), y[:1].flatten()) for name, (x, y) in
            {"alone": alone, "padded": padded}.items()}  # fmt: skip
    torch.testing.assert_close(loss["alone"], loss["padded"])


def test_document_packing_serves_padded_variable_length_batches(tmp_path):
    from ablations.data import IGNORE

    text = "".join(f"paragraph {i} " + "word " * (i % 9) + "\n\n" for i in range(400))
    path = write(tmp_path / "docs.txt", text.encode())
    module = TextDataModule("textfile", path=str(path), block_size=32, batch_size=8, packing="documents",
                            cache_dir=str(tmp_path))  # fmt: skip
    module.setup()
    x, y = next(iter(module.train_dataloader()))
    assert x.shape[0] == 8 and x.shape[1] <= 32 and (y == IGNORE).any()
    total = sum(int((yb != IGNORE).sum()) for _, yb in module.test_dataloader())
    assert total == sum(len(d) - 1 for d in module.val_docs)  # every real validation target, once
    with pytest.raises(ValueError, match="packing"):
        TextDataModule("textfile", path=str(path), packing="bags")


@pytest.mark.parametrize("mode", ["fixed", "buckets", "sorted"])
def test_document_batches_visit_every_document_once_per_epoch_within_the_budget(mode):
    from ablations.data import DocumentBatches

    lengths = torch.randint(2, 66, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = DocumentBatches(lengths, mode, batch_size=16, max_tokens=512, seed=3)
    epochs = [list(sampler), list(sampler)]
    for batches in epochs:
        assert sorted(i for batch in batches for i in batch) == list(range(1000))  # once each, none lost
        if mode == "fixed":
            assert all(len(b) == 16 for b in batches[:-1])
        else:
            assert all(len(b) * max(lengths[i] - 1 for i in b) <= 512 for b in batches)  # the token budget
    assert len(sampler) == len(epochs[0])
    if mode == "sorted":
        widths = [max(lengths[i] for i in b) for b in epochs[0]]
        assert widths == sorted(widths)  # shortest first, every epoch
    else:
        assert epochs[0] != epochs[1]  # reshuffled each epoch


def test_token_budget_batches_pad_less_than_fixed_batches():
    from ablations.data import DocumentBatches

    lengths = torch.randint(2, 66, (2000,), generator=torch.Generator().manual_seed(1)).tolist()

    def padding(mode: str) -> float:
        batches = list(DocumentBatches(lengths, mode, batch_size=32, max_tokens=2048, seed=0))
        slots = sum(len(b) * max(lengths[i] - 1 for i in b) for b in batches)
        return 1 - sum(lengths[i] - 1 for b in batches for i in b) / slots

    assert padding("buckets") < 0.05 < 0.3 < padding("fixed")


def test_a_token_budget_below_one_document_is_refused():
    from ablations.data import DocumentBatches

    with pytest.raises(ValueError, match="max_tokens"):
        DocumentBatches([10, 65], "buckets", batch_size=4, max_tokens=32, seed=0)


def test_epochs_counted_in_fixed_batches_give_bucketed_batches_the_fixed_arms_update_count(tmp_path):
    """The equal-update view of E07: bucketed batches for as many steps as an epoch of fixed batches takes."""
    text = "".join(f"paragraph {i} " + "word " * (i % 9) + "\n\n" for i in range(400))
    path = write(tmp_path / "docs.txt", text.encode())
    common = {"path": str(path), "block_size": 32, "batch_size": 8, "max_tokens": 256, "epochs": 1,
              "cache_dir": str(tmp_path)}  # fmt: skip
    fixed = TextDataModule("textfile", packing="fixed", **common).steps_per_epoch()
    buckets = TextDataModule("textfile", packing="buckets", **common).steps_per_epoch()
    counted = TextDataModule("textfile", packing="buckets", count_epochs_as="fixed", **common)
    assert counted.steps_per_epoch() == fixed != buckets
    assert counted.document_batches().mode == "buckets"  # the batches themselves stay bucketed
    with pytest.raises(ValueError, match="count_epochs_as"):
        TextDataModule("textfile", packing="buckets", count_epochs_as="fixed", **common | {"epochs": None})


def test_a_train_token_limit_keeps_the_first_tokens_of_the_training_split_only(tmp_path):
    (tmp_path / "t.txt").write_text("".join(f"line {i}\n" for i in range(3000)))
    full = TextDataModule("textfile", path=str(tmp_path / "t.txt"), cache_dir=str(tmp_path))
    small = TextDataModule("textfile", path=str(tmp_path / "t.txt"), cache_dir=str(tmp_path), train_tokens_limit=500)
    full.setup(), small.setup()
    assert torch.equal(small.train_ids, full.train_ids[:500]) and torch.equal(small.val_ids, full.val_ids)
    with pytest.raises(ValueError, match="train_tokens_limit needs"):
        TextDataModule("textfile", path=str(tmp_path / "t.txt"), packing="documents", train_tokens_limit=500)


def test_a_domain_token_limit_keeps_the_first_tokens_of_the_domains_training_split_only(tmp_path):
    (tmp_path / "g.txt").write_text("".join(f"line {i}\n" for i in range(3000)))
    (tmp_path / "d.txt").write_text("".join(f"LINE {i}\n" for i in range(3000)))
    paths = {"path": str(tmp_path / "g.txt"), "domain": "textfile", "domain_path": str(tmp_path / "d.txt"),
             "cache_dir": str(tmp_path), "mix": "1:0"}  # fmt: skip
    full, small = TextDataModule("textfile", **paths), TextDataModule("textfile", **paths, domain_tokens_limit=500)
    full.setup(), small.setup()
    assert torch.equal(small.domain_train_ids, full.domain_train_ids[:500])
    assert torch.equal(small.domain_val_ids, full.domain_val_ids) and torch.equal(small.train_ids, full.train_ids)
    with pytest.raises(ValueError, match="domain_tokens_limit needs a data.domain"):
        TextDataModule("textfile", path=str(tmp_path / "g.txt"), domain_tokens_limit=500)

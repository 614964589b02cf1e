"""Checks for ``examples/sentiment_fasttext.py``: text pipeline, bucketing sampler, model, and runs on tiny files."""

from __future__ import annotations

import itertools
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import _examples
import pytest
import torch

import fitkit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sentiment_fasttext.py"

POSITIVE = ["a great and wonderful film", "loved it , a superb movie", "brilliant acting , great fun", "wonderful !"]
CAFE = "caf\xe9 "  # Latin-1 0xe9
NEGATIVE = ["an awful , boring film", "terrible plot and awful acting", "a boring waste of time", "dull and awful ."]


@pytest.fixture(scope="module")
def sf() -> Iterator[ModuleType]:
    with _examples.loaded(EXAMPLE, "fitkit_example_sentiment_fasttext") as module:
        yield module


def write_imdb(root: Path, per_class: int = 12) -> Path:
    """A tiny ``aclImdb`` tree in the real on-disk format: ``<id>_<rating>.txt``, UTF-8, ``<br />`` tags."""
    for split in ("train", "test"):
        for label, sentences, ratings in (("pos", POSITIVE, (7, 8, 9, 10)), ("neg", NEGATIVE, (1, 2, 3, 4))):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                text = f"{sentences[i % 4]}<br /><br />{sentences[(i + 1) % 4].capitalize()}"
                (folder / f"{i}_{ratings[i % 4]}.txt").write_text(text, encoding="utf-8")
    (root / "aclImdb" / "train" / "unsup").mkdir()  # the real archive has one; it is not read
    return root


def write_rt_polarity(folder: Path, per_class: int = 30) -> Path:
    """``rt-polarity.pos`` / ``.neg`` in Latin-1, one snippet a line, with the real files' 0x85 and 0xe9 bytes."""
    folder.mkdir(parents=True)
    for name, sentences in (("pos", POSITIVE), ("neg", NEGATIVE)):
        lines = [f"{sentences[i % 4]} {CAFE if i % 3 == 0 else ''}\x85 {i}" for i in range(per_class)]
        (folder / f"rt-polarity.{name}").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return folder


# -- text ------------------------------------------------------------------------------------
def test_tokenize(sf: ModuleType) -> None:
    assert sf.tokenize("Don't waste your time!") == ["do", "n't", "waste", "your", "time", "!"]
    assert sf.tokenize("It's the film's best; can't") == ["it", "'s", "the", "film", "'s", "best", ";", "ca", "n't"]
    assert sf.tokenize("rock 'n' roll") == ["rock", "'", "n", "'", "roll"]
    assert sf.tokenize("Great.<br /><br />Really,great") == ["great", ".", "really", ",", "great"]
    assert sf.tokenize("  ") == []


def test_generate_bigrams_appends_each_distinct_pair_in_order(sf: ModuleType) -> None:
    assert sf.generate_bigrams(["a", "b", "a", "b"]) == ["a", "b", "a", "b", "a b", "b a"]
    assert sf.generate_bigrams(["solo"]) == ["solo"]
    assert sf.generate_bigrams([]) == []
    tokens = ["x", "y"]
    sf.generate_bigrams(tokens)
    assert tokens == ["x", "y"]  # the book's version appended to its argument


def test_vocab_max_size_specials_and_unknown(sf: ModuleType) -> None:
    data = [["b", "a", "c", "a"], ["b", "a", "d", "<pad>"]]
    vocab = sf.build_vocab(data, max_size=4)
    assert vocab.itos == ["<unk>", "<pad>", "a", "b"]  # specials first; a (3) before b (2); at most 4 in all
    assert (vocab.unk_index, vocab.pad_index, len(vocab)) == (0, 1, 4)
    assert vocab["a"] == 2 and vocab["c"] == vocab["never seen"] == 0
    assert vocab.lookup_indices(["b", "zzz"]) == [3, 0]
    assert sf.build_vocab(data, max_size=5).itos[4] == "c"  # ties alphabetically: c before d
    assert len(sf.build_vocab(data)) == 6  # all of it, under the 25,000 default
    assert sf.build_vocab([], max_size=25_000).itos == ["<unk>", "<pad>"]


def test_vocab_comes_from_the_training_split_only(sf: ModuleType, tmp_path: Path) -> None:
    root = write_rt_polarity(tmp_path / "rt")
    dm = sf.SentimentDataModule(str(root), "rt-polarity", batch_size=8)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (48, 6, 6)
    train_tokens = {i for ids in dm.train_set.ids for i in ids.tolist()}
    assert train_tokens <= set(range(len(dm.vocab)))
    assert len(dm.vocab) == len({t for t in dm.vocab.itos}) and dm.vocab.itos[:2] == ["<unk>", "<pad>"]
    # The sample ids (0..29) appear in one split only: ids only in val/test are unknown to the vocabulary.
    assert any(i == dm.vocab.unk_index for ids in dm.test_set.ids for i in ids.tolist())


def test_read_rt_polarity_splits_on_newlines_only(sf: ModuleType, tmp_path: Path) -> None:
    texts, labels = sf.read_rt_polarity(write_rt_polarity(tmp_path / "rt", per_class=5))
    assert len(texts) == 10 and labels == [0] * 5 + [1] * 5  # 0x85 (U+0085) did not split a line
    assert texts[0].startswith("an awful") and "café" in texts[0]


def test_read_imdb(sf: ModuleType, tmp_path: Path) -> None:
    texts, labels = sf.read_imdb(write_imdb(tmp_path, per_class=3) / "aclImdb", "test")
    assert labels == [0, 0, 0, 1, 1, 1]
    assert texts[3] == "a great and wonderful film<br /><br />Loved it , a superb movie"


# -- bucketing sampler ------------------------------------------------------------------------
LENGTHS = [(i * 37) % 23 + 1 for i in range(250)]


def test_bucketing_yields_every_index_once_per_epoch(sf: ModuleType) -> None:
    sampler = sf.BucketBatchSampler(LENGTHS, batch_size=8, pool_size=64, seed=3)
    for _ in range(3):
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(250))
        assert len(batches) == len(sampler) == 4 * 8  # pools of 64, 64, 64, 58: 8 batches each, the last one short
        assert all(1 <= len(b) <= 8 for b in batches)


def test_bucketing_batches_are_length_sorted_slices_of_pools(sf: ModuleType) -> None:
    sampler = sf.BucketBatchSampler(LENGTHS, batch_size=8, pool_size=64, seed=3)
    pools = sampler.pools(1)
    assert [len(p) for p in pools] == [64, 64, 64, 58]
    for pool in pools:
        assert [LENGTHS[i] for i in pool] == sorted(LENGTHS[i] for i in pool)
    expected = sorted(tuple(p[i : i + 8]) for p in pools for i in range(0, len(p), 8))
    sampler.set_epoch(1)
    assert sorted(tuple(b) for b in sampler) == expected
    # One pool holding everything: batches cover disjoint length ranges.
    spans = sorted((LENGTHS[b[0]], LENGTHS[b[-1]]) for b in sf.BucketBatchSampler(LENGTHS, 8, pool_size=250))
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in itertools.pairwise(spans))


def test_bucketing_is_seeded_and_changes_each_epoch(sf: ModuleType) -> None:
    a, b = sf.BucketBatchSampler(LENGTHS, 8, seed=5), sf.BucketBatchSampler(LENGTHS, 8, seed=5)
    first, second = list(a), list(a)
    assert first == list(b) and second == list(b)  # same seed, same sequence of epochs
    assert first != second  # a new order each epoch
    assert first != list(sf.BucketBatchSampler(LENGTHS, 8, seed=6))
    a.set_epoch(0)
    assert list(a) == first
    assert list(sf.BucketBatchSampler([3, 1, 2], 2, shuffle=False)) == [[1, 2], [0]]


def test_trainer_draws_one_bucket_order_per_epoch(sf: ModuleType, tmp_path: Path) -> None:
    dm = sf.SentimentDataModule(str(write_rt_polarity(tmp_path / "rt")), "rt-polarity", batch_size=8)
    dm.setup("fit")
    model = sf.FastText(len(dm.vocab), 8, dm.vocab.pad_index)
    trainer = fitkit.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=dm)
    sampler = trainer.train_dataloader.batch_sampler
    assert isinstance(sampler, sf.BucketBatchSampler) and sampler.epoch == 3


# -- collate and model ------------------------------------------------------------------------
def test_collate_pads_sequence_first_with_float32_labels(sf: ModuleType) -> None:
    batch = [(torch.tensor([4, 5, 6]), torch.tensor(1.0)), (torch.tensor([7]), torch.tensor(0.0))]
    text, labels = sf.collate_batch(batch, pad_index=1)
    assert text.tolist() == [[4, 7], [5, 1], [6, 1]]
    assert labels.tolist() == [1.0, 0.0] and labels.dtype == torch.float32


def test_mean_pooling_ignores_padding_the_books_does_not(sf: ModuleType) -> None:
    torch.manual_seed(0)
    model = sf.FastText(vocab_size=20, embedding_dim=6, pad_index=1)
    short = torch.tensor([[3], [4]])
    padded = torch.tensor([[3, 5], [4, 6], [1, 7], [1, 8]])  # the same text next to a longer one
    assert torch.allclose(model(short)[0], model(padded)[0])
    book = sf.FastText(vocab_size=20, embedding_dim=6, pad_index=1, pooling="padded")
    book.load_state_dict(model.state_dict())
    assert not torch.allclose(book(short)[0], book(padded)[0])
    with pytest.raises(ValueError, match="pooling='max'"):
        sf.FastText(vocab_size=20, pooling="max")


def test_load_vectors_copies_rows_and_zeroes_specials(sf: ModuleType, tmp_path: Path) -> None:
    vocab = sf.Vocab(["<unk>", "<pad>", "good", "bad", "meh"])
    glove = tmp_path / "tiny.4d.txt"
    glove.write_text("good 1 2 3 4\nunused 9 9 9 9\nbad -1 -2 -3 -4\n<unk> 5 5 5 5\n", encoding="utf-8")
    embedding = torch.nn.Embedding(5, 4, padding_idx=1)
    meh = embedding.weight[4].detach().clone()
    assert sf.load_vectors(embedding, vocab, glove) == 3
    assert embedding.weight[2].tolist() == [1, 2, 3, 4] and embedding.weight[3].tolist() == [-1, -2, -3, -4]
    assert embedding.weight[0].abs().sum() == 0 and embedding.weight[1].abs().sum() == 0
    assert torch.equal(embedding.weight[4], meh)  # not in the file: keeps its random start
    with pytest.raises(SystemExit, match=r"4-d vectors.*--embedding-dim 4"):
        sf.load_vectors(torch.nn.Embedding(5, 100, padding_idx=1), vocab, glove)


# -- end to end ------------------------------------------------------------------------------
def test_smoke_imdb(sf: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_imdb(tmp_path / "data")
    runs = tmp_path / "runs"
    out = sf.main(["--data-dir", str(data), "--max-epochs", "2", "--batch-size", "4", "--default-root-dir", str(runs)])
    assert 0.0 <= out["test_acc"] <= 1.0 and out["test_loss"] > 0
    assert set(out["predictions"]) == set(sf.SENTENCES)
    assert all(0.0 <= p <= 1.0 for p in out["predictions"].values())
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("imdb: 16 train / 8 val / 24 test, vocabulary of ")  # the book's 70/30 of train
    assert any(line.startswith("epoch 1: train loss") for line in lines)
    assert lines[-2:] == [f'predict_sentiment("{s}") = {p:.4f}' for s, p in out["predictions"].items()]
    (checkpoint,) = runs.rglob("*.ckpt")
    assert list(runs.rglob("events.out.tfevents.*"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["datamodule"]["itos"][:2] == ["<unk>", "<pad>"]  # the vocabulary travels with the weights


def test_smoke_rt_polarity_with_vectors_no_bucketing_book_pooling(sf: ModuleType, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_rt_polarity(data / "rt-polarity")
    glove = tmp_path / "glove.tiny.8d.txt"
    glove.write_text("".join(f"{w} {' '.join(['0.5'] * 8)}\n" for w in ("great", "awful", "film")), encoding="utf-8")
    args = ["--dataset", "rt-polarity", "--data-dir", str(data), "--vectors", str(glove), "--embedding-dim", "8"]
    args += ["--no-bucketing", "--pooling", "padded", "--max-epochs", "1", "--default-root-dir", str(tmp_path / "runs")]
    out = sf.main(args)
    assert 0.0 <= out["test_acc"] <= 1.0


def test_download_fetches_and_unpacks(sf: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real archive unpacks to rt-polaritydata/; a file:// URL stands in for the network.
    write_rt_polarity(tmp_path / "src" / "rt-polaritydata")
    archive = tmp_path / "rt-polaritydata.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "rt-polaritydata", arcname="rt-polaritydata")
    monkeypatch.setitem(sf.URLS, "rt-polarity", archive.as_uri())
    data = tmp_path / "data"
    args = ["--dataset", "rt-polarity", "--data-dir", str(data), "--download", "--fast-dev-run", "true"]
    sf.main(args)
    assert (data / "rt-polaritydata" / "rt-polarity.pos").is_file()


def test_missing_data_is_a_clear_error(sf: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as err:
        sf.main(["--dataset", "rt-polarity", "--data-dir", str(tmp_path)])
    assert "rt-polarity dataset" in str(err.value.code) and "--download" in str(err.value.code)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--data-dir", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "error: the imdb dataset (aclImdb/{train,test}/{pos,neg}/*.txt) not found in" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_vectors_file_is_a_clear_error(sf: ModuleType, tmp_path: Path) -> None:
    data = write_imdb(tmp_path / "data", per_class=2)
    with pytest.raises(SystemExit, match="--vectors file not found"):
        sf.main(["--data-dir", str(data), "--vectors", str(tmp_path / "glove.txt")])


# -- real data -------------------------------------------------------------------------------
@pytest.mark.realdata
def test_rt_polarity_reaches_75_percent_in_12_epochs(sf: ModuleType, shared_data: Path, tmp_path: Path) -> None:
    # The book's model, Adam() and batch 64 on sentence polarity (80/10/10, seed 0), 12 epochs: about 40 s on
    # 2 idle cores. Seed 0's split reaches 0.7561 on torch 2.14 and on torch 2.3 alike (seeds 1 and 2: 0.770
    # and 0.771); 1,066 test snippets, so one standard error is 0.013. Before contractions were split as
    # spaCy splits them, seed 0 reached 0.739; a broken pipeline gives about 0.5.
    args = ["--dataset", "rt-polarity", "--data-dir", str(shared_data), "--max-epochs", "12"]
    out = sf.main([*args, "--default-root-dir", str(tmp_path)])
    assert out["test_acc"] >= 0.75, out

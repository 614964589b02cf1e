"""The FastText example's model trained on a torchtext 0.18 pipeline (the legacy lane, ``make test-legacy``).

The book built its pipeline with torchtext; ``examples/sentiment_fasttext.py`` does not
need it. This checks the two fit together: torchtext's ``basic_english`` tokenizer and
``build_vocab_from_iterator`` (``<unk>``, ``<pad>``, ``set_default_index``) feed the
example's bigrams, collate function, bucketing sampler and :class:`FastText`, trained
with fitkit. Skipped where torchtext is not installed (the main lane).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import ModuleType

import _examples
import pytest
import torch
from torch.utils.data import DataLoader

import fitkit

torchtext = pytest.importorskip("torchtext")
from torchtext.data.utils import get_tokenizer  # noqa: E402
from torchtext.vocab import build_vocab_from_iterator  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sentiment_fasttext.py"

GOOD = ["great", "wonderful", "superb", "loved", "brilliant"]
BAD = ["awful", "boring", "terrible", "hated", "dull"]
FILLER = ["the", "film", "was", "a", "movie", "plot", "acting", "and", "it"]


@pytest.fixture(scope="module")
def sf() -> Iterator[ModuleType]:
    with _examples.loaded(EXAMPLE, "fitkit_example_sentiment_fasttext_tt") as module:
        yield module


def toy_reviews(n: int, seed: int) -> list[tuple[str, int]]:
    """Trivially separable reviews: filler words plus one or two words of the label's kind."""
    g = torch.Generator().manual_seed(seed)
    reviews = []
    for i in range(n):
        label = i % 2
        words = [
            FILLER[j] for j in torch.randint(len(FILLER), (int(torch.randint(3, 12, (1,), generator=g)),), generator=g)
        ]
        cue = GOOD if label else BAD
        for _ in range(1 + i % 2):
            words.insert(
                int(torch.randint(len(words) + 1, (1,), generator=g)), cue[int(torch.randint(5, (1,), generator=g))]
            )
        reviews.append((" ".join(words).capitalize() + "!", label))
    return reviews


class Reviews(fitkit.DataModule):
    def __init__(self, sf: ModuleType, batch_size: int = 8) -> None:
        super().__init__()
        tokenizer = get_tokenizer("basic_english")
        train, val = toy_reviews(320, seed=0), toy_reviews(96, seed=1)

        def tokens(text: str) -> list[str]:
            return sf.generate_bigrams(tokenizer(text))

        # The book's pipeline, in torchtext 0.18's words: the vocabulary from the training split only.
        self.vocab = build_vocab_from_iterator(
            (tokens(t) for t, _ in train), specials=["<unk>", "<pad>"], max_tokens=25_000
        )
        self.vocab.set_default_index(self.vocab["<unk>"])
        self.pad_index = self.vocab["<pad>"]

        def encode(data: list[tuple[str, int]]) -> object:
            return sf.EncodedTexts(
                [torch.tensor(self.vocab(tokens(t)), dtype=torch.long) for t, _ in data], [y for _, y in data]
            )

        self.train_set, self.val_set = encode(train), encode(val)
        self.collate = partial(sf.collate_batch, pad_index=self.pad_index)
        self.sampler = sf.BucketBatchSampler(self.train_set.lengths, batch_size, pool_size=batch_size * 4, seed=0)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=64, collate_fn=self.collate)


def test_torchtext_vocab_matches_the_examples_conventions(sf: ModuleType) -> None:
    dm = Reviews(sf)
    assert dm.vocab.get_itos()[:2] == ["<unk>", "<pad>"] and dm.pad_index == 1
    assert dm.vocab["never-seen-token"] == 0
    assert get_tokenizer("basic_english")("Don't waste your time!") == ["don", "'", "t", "waste", "your", "time", "!"]
    # The example's own tokenizer splits contractions as spaCy does; both feed the same bigram step.
    assert sf.tokenize("Don't waste your time!") == ["do", "n't", "waste", "your", "time", "!"]


def test_fasttext_learns_a_separable_toy_set_from_a_torchtext_pipeline(sf: ModuleType) -> None:
    fitkit.seed_everything(0)
    dm = Reviews(sf)
    model = sf.FastText(len(dm.vocab), embedding_dim=16, pad_index=dm.pad_index)
    trainer = fitkit.Trainer(
        max_epochs=6, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    before = trainer.validate(model, datamodule=dm, verbose=False)[0]
    trainer.fit(model, datamodule=dm)
    after = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert after["val_loss"] < before["val_loss"]
    assert after["val_acc"] >= 0.7, (before, after)  # chance: 0.5
    assert dm.sampler.epoch == 6  # one bucketed pass per epoch

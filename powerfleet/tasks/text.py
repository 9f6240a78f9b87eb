"""Text tasks in plain torch: a BERT-style encoder and the 2-layer tied LSTM language model.

* :class:`BertBase` - BERT-base (12 layers, 768 hidden, 12 heads, 30,522-token vocabulary)
  on sequences of 128 tokens, minibatch 16, AdamW (catalog: ``bert-base-squad``), with a
  SQuAD-style span head (``head=qa``: start and end logits) or a sequence classifier
  (``head=cls``: pooled ``[CLS]``).
* :class:`TiedLSTM` - two LSTM layers of 256 with input and output embeddings tied over a
  29 k-word vocabulary, sequences of 8 tokens, minibatch 16 (catalog: ``lstm-wikitext``).

Generated data (no tokenizer or corpus is downloaded):

* QA: ``[CLS] marker [SEP] context [SEP]``; the context is filler words with three spans,
  each a marker token followed by one to four "entity" tokens; the answer is the span whose
  marker the question names. Its label (for partitioning) is the question's marker.
* classification: random words, a third of them from the class's own words.
* language model: sequences from one of ten "topics", each a sparse random Markov chain over
  the vocabulary (every word has eight successors, drawn by Zipf word frequencies as in real
  text, taken with probabilities 1/rank); the topic is the label. Word frequencies and
  successors are predictable, so the loss falls well below ``ln(vocab)``.

``dataset=hf:<name>`` (``head=cls`` and the language model) trains on a real text data set:
words are mapped to ids by a stable hash (:func:`~powerfleet.tasks.data.hashed_tokens`) -
no tokenizer is downloaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as fn
from torch.utils.data import DataLoader, Dataset

from powerfleet.protocol.tasks import TaskError
from powerfleet.tasks.base import BuiltinTask
from powerfleet.tasks.data import Example, GeneratedData, draw_labels, hashed_tokens, hf_column
from powerfleet.tasks.vision import attention
from powertrain.errors import check_choice, check_range

PAD, CLS, SEP = 0, 1, 2
TOPICS = 10  # question markers / classes / language-model topics of the generated data
SPECIAL = 3 + TOPICS  # ids below this are special tokens and markers


# ---------------------------------------------------------------- BERT
class BertLayer(nn.Module):
    """Post-norm transformer encoder layer (BERT): self-attention, GELU feed-forward, dropout 0.1."""

    def __init__(self, hidden: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden, eps=1e-12)
        self.ff = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.norm2 = nn.LayerNorm(hidden, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoded tokens."""
        x = self.norm1(x + self.drop(self.proj(attention(self.qkv(x), self.heads, mask))))
        out: torch.Tensor = self.norm2(x + self.drop(self.ff(x)))
        return out


class BertNet(nn.Module):
    """BERT encoder with token, position and segment embeddings and a QA or classification head."""

    def __init__(self, vocab: int, hidden: int, layers: int, heads: int, seq_len: int, head: str,
                 classes: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(max(seq_len, 512), hidden)
        self.segments = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.drop = nn.Dropout(0.1)
        self.layers = nn.ModuleList(BertLayer(hidden, heads) for _ in range(layers))
        self.head_kind = head
        self.pooler = nn.Linear(hidden, hidden) if head == "cls" else None
        self.out = nn.Linear(hidden, 2 if head == "qa" else classes)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> Any:
        """``(start, end)`` logits ``(B, T)`` each (QA) or class logits ``(B, classes)``."""
        segment = (torch.cumsum((ids == SEP).long(), 1) - (ids == SEP).long()).clamp(max=1)
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.drop(self.norm(self.tokens(ids) + self.positions(pos)[None] + self.segments(segment)))
        mask = (ids != PAD)[:, None, None, :]  # attend to real tokens only
        for layer in self.layers:
            x = layer(x, mask)
        if self.pooler is None:
            start, end = self.out(x).unbind(-1)
            return start, end
        return self.out(torch.tanh(self.pooler(x[:, 0])))


def make_qa(rng: np.random.Generator, label: int, *, seq_len: int, vocab: int) -> Example:
    """A generated QA example: ids ``(seq_len,)`` and the answer's ``(start, end)`` positions."""
    n_entity = max(4, (vocab - SPECIAL) // 4)
    ids = rng.integers(SPECIAL + n_entity, vocab, size=seq_len)
    ids[:3] = (CLS, 3 + label, SEP)
    ids[-1] = SEP
    markers = [label, *rng.choice([t for t in range(TOPICS) if t != label], size=2, replace=False)]
    slot = max((seq_len - 4) // 3, 2)  # three spans in the context positions 3 .. seq_len - 2
    answer = (0, 0)
    for j, m in enumerate(rng.permutation(markers)):
        length = int(rng.integers(1, min(4, slot - 1) + 1))
        start = 3 + j * slot + int(rng.integers(0, max(slot - length - 1, 0) + 1))
        ids[start] = 3 + int(m)
        ids[start + 1: start + 1 + length] = rng.integers(SPECIAL, SPECIAL + n_entity, size=length)
        if m == label:
            answer = (start + 1, start + length)
    return torch.from_numpy(ids.astype(np.int64)), torch.tensor(answer, dtype=torch.int64)


def make_classification(rng: np.random.Generator, label: int, *, seq_len: int, vocab: int,
                        classes: int) -> Example:
    """A generated classification example: ids ``(seq_len,)`` and the class. A third of the
    words come from the class's own words (ids congruent to the class modulo ``classes``)."""
    ids = rng.integers(SPECIAL, vocab, size=seq_len)
    ids[0], ids[-1] = CLS, SEP
    own = rng.random(seq_len) < 1 / 3
    own[[0, -1]] = False
    span = max((vocab - SPECIAL - label) // classes, 1)
    ids[own] = SPECIAL + label + classes * rng.integers(0, span, size=int(own.sum()))
    return torch.from_numpy(ids.astype(np.int64)), torch.tensor(label)


class BertBase(BuiltinTask):
    """BERT-base on 128-token sequences, minibatch 16, AdamW (catalog: ``bert-base-squad``).

    Options: ``head`` (``qa`` | ``cls``), ``seq_len``, ``width`` (heads = round(12 x width), 64
    dimensions each), ``layers``, ``vocab``, ``classes`` (``cls``), ``adamw_lr`` (the fleet's
    SGD rate does not carry over), ``dataset=hf:<name>`` (``cls`` only; ``text_key``,
    ``label_key``), and the data options.
    """

    name = "bert-base-squad"
    catalog_workload = "bert-base-squad"
    batch_size = 16
    description = "BERT-base encoder (seq 128) with a SQuAD-style span head on generated QA, AdamW"
    supports_hf = True

    def __init__(self, *, head: str = "qa", seq_len: int = 128, width: float = 1.0, layers: int = 12,
                 vocab: int = 30522, classes: int = 2, adamw_lr: float = 1e-4, n_train: int = 8192,
                 n_test: int = 512, partitioner: str = "dirichlet", alpha: float = 0.5, workers: int = 4,
                 dataset: str = "generated", text_key: str = "", label_key: str = "") -> None:
        super().__init__()
        self.head = check_choice("head", str(head), ("qa", "cls"))
        self.seq_len = int(check_range("seq_len", seq_len, low=16, high=512))
        self.width = float(check_range("width", width, low=0.05, high=8))
        self.layers = int(check_range("layers", layers, low=1, high=48))
        self.vocab = int(check_range("vocab", vocab, low=4 * SPECIAL))
        self.classes = int(check_range("classes", classes, low=2))
        self.adamw_lr = float(check_range("adamw_lr", adamw_lr, low=0, low_inclusive=False))
        self.heads = max(1, round(12 * self.width))
        self.text_key = str(text_key)
        self._init_data(n_train=n_train, n_test=n_test, partitioner=partitioner, alpha=alpha, workers=workers,
                        dataset=dataset, label_key=label_key)
        if self.hf_name is not None and self.head != "cls":
            raise ValueError("dataset=hf:<name> needs head=cls (spans are not mapped to hashed words)")
        self.input_shape = (self.seq_len,)  # type: ignore[misc]

    def build_model(self) -> nn.Module:
        """The encoder (110 M parameters at width 1)."""
        return BertNet(self.vocab, 64 * self.heads, self.layers, self.heads, self.seq_len, self.head,
                       self.classes)

    def make_optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        """AdamW at ``adamw_lr``, weight decay 0.01 (``lr`` is for SGD tasks and unused)."""
        return torch.optim.AdamW(model.parameters(), lr=self.adamw_lr, weight_decay=0.01)

    def generate(self, n: int, seed: int, stream: int) -> GeneratedData:
        """Generated QA or classification examples (module docstring)."""
        seq_len, vocab, classes, head = self.seq_len, self.vocab, self.classes, self.head

        def make(rng: np.random.Generator, label: int) -> Example:
            if head == "qa":
                return make_qa(rng, label, seq_len=seq_len, vocab=vocab)
            return make_classification(rng, label, seq_len=seq_len, vocab=vocab, classes=classes)

        return GeneratedData(draw_labels(n, TOPICS if head == "qa" else classes, seed, stream), seed, make)

    def from_hf(self, split: Any, ref: str) -> Dataset[Any]:
        """A real text-classification data set with hashed word ids."""
        text_col = hf_column(split, self.text_key, ("text", "sentence", "content"), ref, "text")
        label_col = hf_column(split, self.label_key, ("label", "labels"), ref, "label")
        return HFText(split, text_col, label_col, self.seq_len, self.vocab, self.classes, ref)

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        """Mean of the start and end cross-entropies (QA), or cross-entropy (classification)."""
        if self.head == "qa":
            start, end = output
            return (fn.cross_entropy(start, target[:, 0]) + fn.cross_entropy(end, target[:, 1])) / 2
        return fn.cross_entropy(output, target)

    def evaluate(self, model: nn.Module, data: Dataset[Any]) -> dict[str, float]:
        """``loss`` and ``accuracy`` (QA: exact start and end; classification: the class)."""
        if self.head == "cls":
            return super().evaluate(model, data)
        model.eval()
        total, hits, count = 0.0, 0, 0
        with torch.no_grad():
            for ids, target in DataLoader(data, batch_size=64):
                start, end = model(ids)
                total += float(self.loss((start, end), target)) * len(ids)
                hits += int(((start.argmax(1) == target[:, 0]) & (end.argmax(1) == target[:, 1])).sum())
                count += len(ids)
        return {"loss": total / max(count, 1), "accuracy": hits / max(count, 1)}


class HFText(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A ``datasets.Dataset`` of texts as ``[CLS] words... [SEP]`` hashed ids, padded to ``seq_len``."""

    def __init__(self, split: Any, text_col: str, label_col: str, seq_len: int, vocab: int, classes: int,
                 ref: str) -> None:
        self.split, self.text_col, self.label_col = split, text_col, label_col
        self.seq_len, self.vocab, self.classes, self.ref = seq_len, vocab, classes, ref

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.split[int(index)]
        label = int(row[self.label_col])
        if not 0 <= label < self.classes:
            raise TaskError(f"dataset {self.ref}: label {label} is outside classes={self.classes}; "
                            "set the classes option")
        words = hashed_tokens(str(row[self.text_col]), self.vocab, SPECIAL)[: self.seq_len - 2]
        ids = [CLS, *words, SEP] + [PAD] * (self.seq_len - 2 - len(words))
        return torch.tensor(ids, dtype=torch.int64), torch.tensor(label)


# ---------------------------------------------------------------- LSTM language model
class TiedLSTMNet(nn.Module):
    """Embedding, stacked LSTM, dropout, decoder sharing the embedding's weights."""

    def __init__(self, vocab: int, hidden: int, layers: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.lstm = nn.LSTM(hidden, hidden, layers, dropout=dropout if layers > 1 else 0.0, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab)
        self.decoder.weight = self.embed.weight  # tied (Press & Wolf; Inan et al.)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-word logits ``(B, T, vocab)``."""
        out, _ = self.lstm(self.drop(self.embed(tokens)))
        logits: torch.Tensor = self.decoder(self.drop(out))
        return logits


def topic_chains(seed: int, vocab: int, successors: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per topic, each word's successor ids ``(TOPICS, vocab, successors)``, the successors'
    probabilities, and the word frequencies successors are drawn from (Zipf, as in real text)."""
    rng = np.random.default_rng([seed, 8888, vocab])
    freq = 1.0 / np.arange(1, vocab + 1) ** 1.1
    freq /= freq.sum()
    nxt = rng.choice(vocab, size=(TOPICS, vocab, successors), p=freq)
    p = 1.0 / np.arange(1, successors + 1)
    return nxt, p / p.sum(), freq


class TiedLSTM(BuiltinTask):
    """2-layer LSTM-256 language model with a tied 29 k-word decoder, sequences of 8, minibatch 16
    (catalog: ``lstm-wikitext``).

    Trained as PyTorch's word_language_model example: plain SGD at ``sgd_lr`` (20; the fleet's
    rate, meant for momentum SGD on CNNs, does not carry over) with gradients clipped to norm
    ``clip`` (0.25).

    Options: ``seq_len`` (8), ``width`` (hidden = round(256 x width)), ``layers`` (2), ``vocab``
    (29,000), ``sgd_lr``, ``clip``, ``dataset=hf:<name>`` (``text_key``; hashed word ids), and the
    data options; ``partitioner`` defaults to ``auto``: Dirichlet over the generated topics, IID
    over a real data set's running text unless ``label_key`` names a column to skew by.
    """

    name = "lstm-wikitext"
    catalog_workload = "lstm-wikitext"
    batch_size = 16
    description = "2-layer tied LSTM language model (256 hidden, 29 k words, seq 8) on generated topic text"
    supports_hf = True

    def __init__(self, *, seq_len: int = 8, width: float = 1.0, layers: int = 2, vocab: int = 29000,
                 sgd_lr: float = 20.0, clip: float = 0.25, n_train: int = 20000, n_test: int = 1000,
                 partitioner: str = "auto", alpha: float = 0.5,
                 workers: int = 4, dataset: str = "generated", text_key: str = "", label_key: str = "") -> None:
        super().__init__()
        self.seq_len = int(check_range("seq_len", seq_len, low=2, high=4096))
        self.width = float(check_range("width", width, low=0.05, high=16))
        self.layers = int(check_range("layers", layers, low=1, high=16))
        self.vocab = int(check_range("vocab", vocab, low=16))
        self.sgd_lr = float(check_range("sgd_lr", sgd_lr, low=0, low_inclusive=False))
        self.clip = float(check_range("clip", clip, low=0, low_inclusive=False))
        self.hidden = max(4, round(256 * self.width))
        self.text_key = str(text_key)
        if partitioner == "auto":  # running text of a real data set has no label to skew by
            partitioner = "iid" if str(dataset).startswith("hf:") and not label_key else "dirichlet"
        self._init_data(n_train=n_train, n_test=n_test, partitioner=partitioner, alpha=alpha, workers=workers,
                        dataset=dataset, label_key=label_key)
        self.input_shape = (self.seq_len,)  # type: ignore[misc]

    def build_model(self) -> nn.Module:
        """The language model (8.5 M parameters at the defaults, the tied embedding counted once)."""
        return TiedLSTMNet(self.vocab, self.hidden, self.layers)

    def make_optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        """Plain SGD at ``sgd_lr`` (``lr`` is for momentum-SGD tasks and unused)."""
        return torch.optim.SGD(model.parameters(), lr=self.sgd_lr)

    def train_step(self, model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> float:
        """One minibatch with the gradient norm clipped to ``clip``."""
        tokens, target = batch
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(model(tokens), target)
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(model.parameters(), self.clip)
        optimizer.step()
        return float(loss.detach())

    def generate(self, n: int, seed: int, stream: int) -> GeneratedData:
        """Sequences of ``seq_len + 1`` words from a topic's Markov chain (module docstring)."""
        nxt, p, freq = topic_chains(seed, self.vocab)
        seq_len, vocab = self.seq_len, self.vocab

        def make(rng: np.random.Generator, label: int) -> Example:
            words = np.empty(seq_len + 1, dtype=np.int64)
            words[0] = rng.choice(vocab, p=freq)
            picks = rng.choice(len(p), size=seq_len, p=p)
            for i in range(seq_len):
                words[i + 1] = nxt[label, words[i], picks[i]]
            seq = torch.from_numpy(words)
            return seq[:-1], seq[1:]

        return GeneratedData(draw_labels(n, TOPICS, seed, stream), seed, make)

    def from_hf(self, split: Any, ref: str) -> Dataset[Any]:
        """A real text data set cut into ``seq_len + 1``-word windows of hashed ids."""
        text_col = hf_column(split, self.text_key, ("text", "sentence", "content"), ref, "text")
        ids: list[int] = []
        for text in split[text_col]:
            ids += hashed_tokens(str(text), self.vocab, 0)
        n = max(len(ids) - 1, 0) // self.seq_len
        if n == 0:
            raise TaskError(f"dataset {ref}: its {text_col!r} column holds fewer than {self.seq_len + 1} words")
        arr = torch.tensor(ids[: n * self.seq_len + 1], dtype=torch.int64)
        inputs = arr[:-1].view(n, self.seq_len)
        targets = arr[1:].view(n, self.seq_len)
        return torch.utils.data.TensorDataset(inputs, targets)

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        """Cross-entropy of every next word."""
        return fn.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    def evaluate(self, model: nn.Module, data: Dataset[Any]) -> dict[str, float]:
        """``loss``, ``accuracy`` (next word, top-1) and ``perplexity``."""
        model.eval()
        total, hits, count = 0.0, 0, 0
        with torch.no_grad():
            for tokens, target in DataLoader(data, batch_size=256):
                out = model(tokens)
                total += float(fn.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1), reduction="sum"))
                hits += int((out.argmax(-1) == target).sum())
                count += int(target.numel())
        mean = total / max(count, 1)
        return {"loss": mean, "accuracy": hits / max(count, 1), "perplexity": float(np.exp(min(mean, 50.0)))}

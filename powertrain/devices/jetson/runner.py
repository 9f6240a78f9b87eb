"""Real training of catalog workloads on a board: models, synthetic minibatches, step timing.

Each runnable workload (:mod:`powertrain.workloads`) gets a model of the catalog's shape and
a fixed synthetic minibatch of the catalog's batch size (the boards have no datasets and no
network, so data loading is not part of the timed step). Pure-torch models cover the LSTM,
DS-CNN keyword spotting and BERT-base workloads; ResNet-18, MobileNetV3 and ViT-S/16 need
torchvision, which is imported lazily and only when installed (it is not installable beside
torch 2.13 on the development machines). YOLOv8 needs ultralytics and is not runnable.

Timing: on CUDA each step is bracketed by CUDA events (GPU time of the queued work, read
after one synchronize); on CPU by ``time.perf_counter``. The first minibatches after building
a model (allocator growth, cuDNN autotuning) are run untimed and dropped.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from powertrain.errors import DeviceError, UnknownNameError, check_range
from powertrain.workloads import get_workload

if TYPE_CHECKING:  # torch is imported lazily: importing this module must stay cheap
    import torch
    from torch import nn

PURE_TORCH_WORKLOADS = ("lstm-wikitext", "kws-dscnn-speechcommands", "bert-base-squad")
TORCHVISION_WORKLOADS = ("resnet18-imagenet", "mobilenetv3-gld23k", "vit-s16-imagenet")
NOT_RUNNABLE = {"yolov8n-coco": "needs the ultralytics package (YOLOv8), which powerfleet does not install"}


def torchvision_available() -> bool:
    """Whether torchvision is installed (checked without importing it)."""
    return importlib.util.find_spec("torchvision") is not None


def runnable_workloads() -> list[str]:
    """Workloads this machine can train for real."""
    names = list(PURE_TORCH_WORKLOADS)
    if torchvision_available():
        names += TORCHVISION_WORKLOADS
    return names


def resolve_torch_device(name: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("torch device 'cuda' requested but torch.cuda.is_available() is False")
    if name not in {"cuda", "cpu"}:
        raise DeviceError(f"torch device {name!r} is not known; valid: auto, cuda, cpu")
    return name


# ---------------------------------------------------------------------------- models
def _models() -> dict[str, Any]:
    """Model classes, defined on first use so that importing this module does not import torch."""
    import torch
    from torch import nn

    class TiedLSTM(nn.Module):
        """2-layer LSTM language model with tied input/output embeddings (word_language_model)."""

        def __init__(self, vocab: int = 33278, dim: int = 256, layers: int = 2, dropout: float = 0.2):
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.lstm = nn.LSTM(dim, dim, layers, dropout=dropout, batch_first=True)
            self.drop = nn.Dropout(dropout)
            self.decoder = nn.Linear(dim, vocab)
            self.decoder.weight = self.embed.weight

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(self.drop(self.embed(tokens)))
            return self.decoder(self.drop(out))  # type: ignore[no-any-return]

    class DSCNN(nn.Module):
        """DS-CNN-S keyword spotter (Zhang et al., Hello Edge) on 49x10 MFCC frames."""

        def __init__(self, classes: int = 12, width: int = 64, blocks: int = 4):
            super().__init__()
            layers: list[nn.Module] = [nn.Conv2d(1, width, (10, 4), stride=(2, 2), padding=(5, 1)),
                                       nn.BatchNorm2d(width), nn.ReLU()]
            for _ in range(blocks):
                layers += [nn.Conv2d(width, width, 3, padding=1, groups=width), nn.BatchNorm2d(width),
                           nn.ReLU(), nn.Conv2d(width, width, 1), nn.BatchNorm2d(width), nn.ReLU()]
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(width, classes)

        def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(mfcc).mean(dim=(2, 3)))  # type: ignore[no-any-return]

    class BertQA(nn.Module):
        """BERT encoder (post-norm, GELU) with a SQuAD span head: start and end logits."""

        def __init__(self, vocab: int = 30522, hidden: int = 768, layers: int = 12, heads: int = 12,
                     ff: int = 3072, max_len: int = 512):
            super().__init__()
            self.tokens = nn.Embedding(vocab, hidden)
            self.positions = nn.Embedding(max_len, hidden)
            self.types = nn.Embedding(2, hidden)
            self.norm = nn.LayerNorm(hidden)
            self.drop = nn.Dropout(0.1)
            layer = nn.TransformerEncoderLayer(hidden, heads, ff, dropout=0.1, activation="gelu",
                                               batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.qa = nn.Linear(hidden, 2)

        def forward(self, ids: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
            x = self.drop(self.norm(self.tokens(ids) + self.positions(pos) + self.types(types)))
            return self.qa(self.encoder(x))  # type: ignore[no-any-return]

    return {"TiedLSTM": TiedLSTM, "DSCNN": DSCNN, "BertQA": BertQA}


@dataclass
class TrainingStep:
    """A model, its optimizer and one fixed minibatch; ``__call__`` trains one step on it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: Callable[[], torch.Tensor]
    clip_norm: float | None = None

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()  # type: ignore[no-untyped-call]
        if self.clip_norm is not None:
            import torch

            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.optimizer.step()


def build_training_step(workload: str, device: str = "cpu", seed: int = 0,
                        overrides: dict[str, int] | None = None) -> TrainingStep:
    """Model, optimizer and a synthetic minibatch for ``workload`` on ``device``.

    ``overrides`` shrinks a model for tests (e.g. ``{"layers": 1, "hidden": 64}`` for BERT).
    """
    import torch
    from torch import nn

    wl = get_workload(workload)
    if workload in NOT_RUNNABLE:
        raise DeviceError(f"workload {workload!r} cannot be trained here: {NOT_RUNNABLE[workload]}; "
                          f"runnable: {', '.join(runnable_workloads())}")
    if workload in TORCHVISION_WORKLOADS and not torchvision_available():
        raise DeviceError(f"workload {workload!r} needs torchvision, which is not installed; "
                          f"runnable here: {', '.join(runnable_workloads())}")
    if workload not in PURE_TORCH_WORKLOADS + TORCHVISION_WORKLOADS:
        raise UnknownNameError(f"workload {workload!r} has no runnable model; "
                               f"runnable: {', '.join(runnable_workloads())}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opts = dict(overrides or {})
    b = wl.batch_size
    ce = nn.CrossEntropyLoss()
    models = _models()
    clip = None
    if workload == "lstm-wikitext":
        vocab = opts.pop("vocab", 33278)
        model = models["TiedLSTM"](vocab=vocab, **opts).to(device)
        tokens = torch.randint(0, vocab, (b, 9), generator=gen).to(device)

        def loss() -> torch.Tensor:
            logits = model(tokens[:, :-1])
            return ce(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1))  # type: ignore[no-any-return]

        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        clip = 0.25
    elif workload == "kws-dscnn-speechcommands":
        classes = opts.pop("classes", 12)
        model = models["DSCNN"](classes=classes, **opts).to(device)
        mfcc = torch.randn((b, 1, 49, 10), generator=gen).to(device)
        labels = torch.randint(0, classes, (b,), generator=gen).to(device)

        def loss() -> torch.Tensor:
            return ce(model(mfcc), labels)  # type: ignore[no-any-return]

        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    elif workload == "bert-base-squad":
        seq = opts.pop("seq", 128)
        vocab = opts.pop("vocab", 30522)
        model = models["BertQA"](vocab=vocab, **opts).to(device)
        ids = torch.randint(0, vocab, (b, seq), generator=gen).to(device)
        types = (torch.arange(seq) >= seq // 2).long().expand(b, seq).contiguous().to(device)
        spans = torch.randint(0, seq, (2, b), generator=gen).sort(dim=0).values.to(device)

        def loss() -> torch.Tensor:
            start, end = model(ids, types).unbind(dim=-1)
            return (ce(start, spans[0]) + ce(end, spans[1])) / 2  # type: ignore[no-any-return]

        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5)
    else:
        torchvision = importlib.import_module("torchvision")  # present: checked above

        size = opts.pop("image_size", 224)
        if workload == "resnet18-imagenet":
            classes = 1000
            model = torchvision.models.resnet18(weights=None, num_classes=classes).to(device)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        elif workload == "mobilenetv3-gld23k":
            classes = 203  # GLD-23k landmarks
            model = torchvision.models.mobilenet_v3_large(weights=None, num_classes=classes).to(device)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        else:  # ViT-S/16
            classes = 1000
            model = torchvision.models.VisionTransformer(
                image_size=size, patch_size=16, num_layers=12, num_heads=6, hidden_dim=384,
                mlp_dim=1536, num_classes=classes).to(device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        images = torch.randn((b, 3, size, size), generator=gen).to(device)
        labels = torch.randint(0, classes, (b,), generator=gen).to(device)

        def loss() -> torch.Tensor:
            return ce(model(images), labels)  # type: ignore[no-any-return]

    model.train()
    return TrainingStep(model, optimizer, loss, clip)


# ---------------------------------------------------------------------------- timing
def time_calls_ms(call: Callable[[int], None], n: int, *, cuda: bool) -> tuple[np.ndarray, str]:
    """Run ``call(i)`` for ``i < n`` and time each call; returns (times in ms, timer name).

    With ``cuda`` every call is bracketed by CUDA events and read after one synchronize, so the
    time is that of the GPU work the call queued (host-only work shows as launch gaps).
    """
    check_range("n_minibatches", n, low=1)
    times = np.empty(int(n))
    if cuda:
        import torch

        events = [(torch.cuda.Event(enable_timing=True),  # type: ignore[no-untyped-call]
                   torch.cuda.Event(enable_timing=True))  # type: ignore[no-untyped-call]
                  for _ in range(int(n))]
        for i, (start, end) in enumerate(events):
            start.record()
            call(i)
            end.record()
        torch.cuda.synchronize()
        for i, (start, end) in enumerate(events):
            times[i] = start.elapsed_time(end)
        return times, "cuda-events"
    for i in range(int(n)):
        t0 = time.perf_counter()
        call(i)
        times[i] = (time.perf_counter() - t0) * 1000.0
    return times, "perf_counter"


class WorkloadRunner:
    """Trains one workload for real; built on first use, warm-up minibatches dropped."""

    def __init__(self, workload: str, *, torch_device: str = "auto", seed: int = 0,
                 warmup_minibatches: int = 3, overrides: dict[str, int] | None = None) -> None:
        check_range("warmup_minibatches", warmup_minibatches, low=0)
        get_workload(workload)
        self.workload = workload
        self.torch_device_name = torch_device
        self.seed = seed
        self.warmup_minibatches = int(warmup_minibatches)
        self.overrides = overrides
        self._step: TrainingStep | None = None
        self.device = ""
        self.steps_run = 0

    def build(self) -> TrainingStep:
        """Build the model and run the dropped warm-up minibatches (once)."""
        if self._step is None:
            self.device = resolve_torch_device(self.torch_device_name)
            self._step = build_training_step(self.workload, self.device, self.seed, self.overrides)
            for _ in range(self.warmup_minibatches):
                self._step()
            if self.device == "cuda":
                import torch

                torch.cuda.synchronize()
        return self._step

    def time_minibatches_ms(self, n: int) -> tuple[np.ndarray, str]:
        """Train ``n`` timed minibatches; returns (per-minibatch times in ms, timer name)."""
        step = self.build()

        def call(_: int) -> None:
            step()

        times, timer = time_calls_ms(call, n, cuda=self.device == "cuda")
        self.steps_run += int(n)
        return times, timer

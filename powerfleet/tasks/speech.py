"""``KeywordSpotting``: a DS-CNN keyword spotter on MFCC features, in plain torch.

Catalog row ``kws-dscnn-speechcommands``: Speech Commands v2 (12 classes: ten keywords,
silence, unknown), one-second clips as 49 x 10 MFCC frames (40 ms windows, 20 ms hop, ten
coefficients), minibatch 16. The network is DS-CNN-M of Hello Edge (Zhang et al. 2017):
a 10 x 4 stride-2 convolution to 172 channels and four depthwise-separable blocks.

Generated data: each class is a "word" of three syllables, each a harmonic tone with a
class-specific pitch, harmonic mix and length; a clip is the word shifted in time, scaled in
loudness and pitch, over background noise. The loader synthesises the 16 kHz waveform and
computes its MFCCs (framing, Hamming window, FFT, 40 mel filters, log, DCT) on the CPU per
clip - the CPU-heavy feature extraction that makes this a loader-bound workload.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn
from torch.nn import functional as fn

from powerfleet.tasks.base import BuiltinTask
from powerfleet.tasks.data import Example, GeneratedData, draw_labels
from powertrain.errors import check_range

SAMPLE_HZ = 16000
CLIP_S = 1.0
WINDOW = 640  # 40 ms
HOP = 320  # 20 ms
N_FFT = 1024
MEL_FILTERS = 40
MEL_LOW_HZ, MEL_HIGH_HZ = 20.0, 4000.0


@lru_cache(maxsize=4)
def _mel_dct(n_mfcc: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hamming window, mel filterbank ``(N_FFT/2+1, 40)`` and DCT-II matrix ``(40, n_mfcc)``
    (contiguous, as the products take them: small strided products are slow in BLAS)."""
    def mel(f: np.ndarray) -> np.ndarray:
        return np.asarray(2595.0 * np.log10(1.0 + f / 700.0))

    edges_mel = np.linspace(mel(np.array(MEL_LOW_HZ)), mel(np.array(MEL_HIGH_HZ)), MEL_FILTERS + 2)
    edges_hz = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_HZ)
    bank = np.zeros((MEL_FILTERS, bins.size))
    for i in range(MEL_FILTERS):
        lo, mid, hi = edges_hz[i: i + 3]
        bank[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0.0, None)
    k = np.arange(MEL_FILTERS)
    dct = np.cos(np.pi / MEL_FILTERS * (k[None, :] + 0.5) * np.arange(n_mfcc)[:, None]) * np.sqrt(2.0 / MEL_FILTERS)
    return np.hamming(WINDOW), np.ascontiguousarray(bank.T), np.ascontiguousarray(dct.T)


def mfcc(wave: np.ndarray, n_mfcc: int = 10) -> np.ndarray:
    """MFCC frames ``(frames, n_mfcc)`` of a 16 kHz waveform (40 ms windows, 20 ms hop)."""
    window, bank, dct = _mel_dct(n_mfcc)
    frames = 1 + (wave.size - WINDOW) // HOP
    idx = np.arange(WINDOW)[None, :] + HOP * np.arange(frames)[:, None]
    power = np.abs(np.fft.rfft(wave[idx] * window, N_FFT)) ** 2
    # einsum keeps these small products in one thread (a threaded BLAS is 10x slower on a busy host)
    out: np.ndarray = np.einsum("fm,mc->fc", np.log(np.einsum("fk,km->fm", power, bank) + 1e-6), dct)
    return out


def make_clip(rng: np.random.Generator, label: int, *, seed: int) -> np.ndarray:
    """One second of generated speech-like audio of keyword ``label`` (module docstring)."""
    word = np.random.default_rng([seed, 6060, label])
    pitches = word.uniform(110.0, 420.0, size=3)
    lengths = word.uniform(0.1, 0.22, size=3)
    harmonics = word.uniform(0.1, 1.0, size=(3, 4))
    n = int(SAMPLE_HZ * CLIP_S)
    wave = rng.normal(0.0, rng.uniform(0.02, 0.15), size=n)
    t0 = rng.uniform(0.05, 0.3)
    scale = rng.uniform(0.94, 1.06)
    loud = rng.uniform(0.4, 1.0)
    for pitch, length, mix in zip(pitches, lengths, harmonics, strict=True):
        a, b = int(t0 * SAMPLE_HZ), min(int((t0 + length) * SAMPLE_HZ), n)
        t = np.arange(b - a) / SAMPLE_HZ
        envelope = np.sin(np.pi * np.linspace(0.0, 1.0, b - a))
        tone = sum(m * np.sin(2 * np.pi * pitch * scale * (h + 1) * t) for h, m in enumerate(mix))
        wave[a:b] += loud * envelope * tone
        t0 += length + 0.03
    return wave


class DSCNN(nn.Module):
    """DS-CNN (Hello Edge): 10 x 4 stride-2 conv, ``blocks`` depthwise-separable blocks, average pool."""

    def __init__(self, classes: int = 12, channels: int = 172, blocks: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, channels, (10, 4), (2, 2), (5, 1), bias=False),
                                   nn.BatchNorm2d(channels), nn.ReLU()]
        for _ in range(blocks):
            layers += [nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(),
                       nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of MFCC inputs ``(B, 1, frames, coefficients)``."""
        out: torch.Tensor = self.head(torch.flatten(fn.adaptive_avg_pool2d(self.features(x), 1), 1))
        return out


class KeywordSpotting(BuiltinTask):
    """DS-CNN-M on 49 x 10 MFCCs, 12 classes, minibatch 16 (catalog: ``kws-dscnn-speechcommands``).

    Options: ``width`` (channels = round(172 x width)), ``blocks`` (4), ``classes`` (12),
    ``n_mfcc`` (10), and the data options.
    """

    name = "kws-dscnn-speechcommands"
    catalog_workload = "kws-dscnn-speechcommands"
    batch_size = 16
    description = "DS-CNN keyword spotting on MFCCs of generated one-second clips (12 classes)"

    def __init__(self, *, width: float = 1.0, blocks: int = 4, classes: int = 12, n_mfcc: int = 10,
                 n_train: int = 8192, n_test: int = 512, partitioner: str = "dirichlet", alpha: float = 0.5,
                 workers: int = 4) -> None:
        super().__init__()
        self.width = float(check_range("width", width, low=0.02, high=16))
        self.blocks = int(check_range("blocks", blocks, low=0, high=32))
        self.classes = int(check_range("classes", classes, low=2))
        self.n_mfcc = int(check_range("n_mfcc", n_mfcc, low=2, high=MEL_FILTERS))
        self._init_data(n_train=n_train, n_test=n_test, partitioner=partitioner, alpha=alpha, workers=workers)
        frames = 1 + (int(SAMPLE_HZ * CLIP_S) - WINDOW) // HOP
        self.input_shape = (1, frames, self.n_mfcc)  # type: ignore[misc]

    def build_model(self) -> nn.Module:
        """DS-CNN (about 0.14 M parameters at width 1)."""
        return DSCNN(self.classes, max(4, round(172 * self.width)), self.blocks)

    def generate(self, n: int, seed: int, stream: int) -> GeneratedData:
        """Generated clips as MFCC frames (computed on access)."""
        n_mfcc = self.n_mfcc

        def make(rng: np.random.Generator, label: int) -> Example:
            feats = mfcc(make_clip(rng, label, seed=seed), n_mfcc) / 10.0
            return torch.from_numpy(feats.astype(np.float32)[None]), torch.tensor(label)

        return GeneratedData(draw_labels(n, self.classes, seed, stream), seed, make)

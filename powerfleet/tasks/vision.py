"""Image classification tasks in plain torch: ResNet-18, MobileNetV3-Large and ViT-S/16.

Defaults match the catalog rows (``powertrain.workloads``): 224 px RGB images, minibatch 16,
1000 classes (ImageNet) or 203 (GLD-23k for MobileNetV3). Options shrink them for tests:
``image_px``, ``width`` (channel / embedding multiplier), ``classes``, ``layers`` (ViT depth),
plus the data options of :class:`~powerfleet.tasks.base.BuiltinTask`.

Generated data: each class has a smooth random colour pattern (its prototype); an example is
its class prototype, randomly shifted and scaled in contrast, over a weaker prototype of
another class and pixel noise. The image is made on access (the loader's CPU work per
minibatch is real), and the task is learnable: a small network separates the classes within
a few dozen steps. ``dataset=hf:<name>`` trains on a real image data set instead (images
resized to ``image_px``; ``image_key`` and ``label_key`` name the columns).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as fn
from torch.utils.data import Dataset

from powerfleet.protocol.tasks import TaskError
from powerfleet.tasks.base import BuiltinTask
from powerfleet.tasks.data import Example, GeneratedData, draw_labels, hf_column, smooth_pattern
from powertrain.errors import check_range

#: Contrast of the distractor prototype and the pixel-noise spread of generated images.
DISTRACTOR = 0.35
NOISE_STD = 0.6
PROTOTYPE_CELLS = 6


def make_image(rng: np.random.Generator, label: int, *, seed: int, classes: int, px: int) -> np.ndarray:
    """One generated ``(3, px, px)`` float32 image of class ``label`` (see the module docstring)."""
    proto = smooth_pattern(np.random.default_rng([seed, 4242, label]), 3, px, PROTOTYPE_CELLS)
    other = int((label + 1 + rng.integers(0, max(classes - 1, 1))) % classes)
    distractor = smooth_pattern(np.random.default_rng([seed, 4242, other]), 3, px, PROTOTYPE_CELLS)
    shift = rng.integers(-(px // 8), px // 8 + 1, size=2)
    img = rng.uniform(0.7, 1.3) * np.roll(proto, tuple(int(s) for s in shift), axis=(1, 2))
    img += DISTRACTOR * distractor + rng.normal(0.0, NOISE_STD, size=img.shape)
    return img.astype(np.float32)


class ImageTask(BuiltinTask):
    """Shared options and data of the image classification tasks."""

    supports_hf = True

    def __init__(self, *, image_px: int = 224, width: float = 1.0, classes: int = 1000, n_train: int = 4096,
                 n_test: int = 512, partitioner: str = "dirichlet", alpha: float = 0.5, workers: int = 4,
                 dataset: str = "generated", image_key: str = "", label_key: str = "") -> None:
        super().__init__()
        self.image_px = int(check_range("image_px", image_px, low=16, high=1024))
        self.width = float(check_range("width", width, low=0.05, high=8))
        self.classes = int(check_range("classes", classes, low=2))
        self.image_key = str(image_key)
        self._init_data(n_train=n_train, n_test=n_test, partitioner=partitioner, alpha=alpha, workers=workers,
                        dataset=dataset, label_key=label_key)
        self.input_shape = (3, self.image_px, self.image_px)  # type: ignore[misc]

    def generate(self, n: int, seed: int, stream: int) -> GeneratedData:
        """Generated images (see the module docstring)."""
        px, classes = self.image_px, self.classes

        def make(rng: np.random.Generator, label: int) -> Example:
            img = make_image(rng, label, seed=seed, classes=classes, px=px)
            return torch.from_numpy(img), torch.tensor(label)

        return GeneratedData(draw_labels(n, classes, seed, stream), seed, make)

    def from_hf(self, split: Any, ref: str) -> Dataset[Any]:
        """A real image data set, resized to ``image_px`` and standardised."""
        image_col = hf_column(split, self.image_key, ("img", "image", "pixel_values"), ref, "image")
        label_col = hf_column(split, self.label_key, ("label", "fine_label", "labels"), ref, "label")
        return HFImages(split, image_col, label_col, self.image_px, self.classes, ref)


class HFImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A ``datasets.Dataset`` of images as ``(3, px, px)`` tensors (decoded and resized on access)."""

    def __init__(self, split: Any, image_col: str, label_col: str, px: int, classes: int, ref: str) -> None:
        self.split, self.image_col, self.label_col = split, image_col, label_col
        self.px, self.classes, self.ref = px, classes, ref

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.split[int(index)]
        image = row[self.image_col].convert("RGB").resize((self.px, self.px))
        label = int(row[self.label_col])
        if not 0 <= label < self.classes:
            raise TaskError(f"dataset {self.ref}: label {label} is outside classes={self.classes}; "
                            "set the classes option")
        arr = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy((arr - 0.45) / 0.25), torch.tensor(label)


# ---------------------------------------------------------------- ResNet-18
class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block."""
        out = fn.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return fn.relu(out + self.down(x))


class ResNet18Net(nn.Module):
    """ResNet-18 (He et al.; torchvision's layout) with channel widths scaled by ``width``."""

    def __init__(self, classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        ch = [max(4, round(c * width)) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(nn.Conv2d(3, ch[0], 7, 2, 3, bias=False), nn.BatchNorm2d(ch[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        c_in = ch[0]
        for i, c in enumerate(ch):
            blocks += [BasicBlock(c_in, c, 1 if i == 0 else 2), BasicBlock(c, c, 1)]
            c_in = c
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(ch[-1], classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        out: torch.Tensor = self.fc(torch.flatten(fn.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))
        return out


class ResNet18(ImageTask):
    """ResNet-18 on 224 px images, minibatch 16 (catalog: ``resnet18-imagenet``).

    Options: ``image_px``, ``width``, ``classes``, and the data options (module docstring).
    """

    name = "resnet18-imagenet"
    catalog_workload = "resnet18-imagenet"
    batch_size = 16
    description = "ResNet-18, ImageNet-shaped generated images (224 px)"

    def build_model(self) -> nn.Module:
        """ResNet-18 (11.7 M parameters at width 1 and 1000 classes)."""
        return ResNet18Net(self.classes, self.width)


# ---------------------------------------------------------------- MobileNetV3-Large
def _divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` (never below 90 % of ``value``), as torchvision."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm + activation."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.Hardswish) -> None:
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(c_out, eps=0.001, momentum=0.01)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention: pooled 1x1 convs, ReLU then hard sigmoid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeeze = _divisible(channels // 4)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rescaled channels."""
        s = self.fc2(fn.relu(self.fc1(fn.adaptive_avg_pool2d(x, 1))))
        return x * fn.hardsigmoid(s)


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expansion, depthwise k x k, optional SE, 1x1 projection."""

    def __init__(self, c_in: int, k: int, c_exp: int, c_out: int, se: bool, act: type[nn.Module],
                 stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if c_exp != c_in:
            layers.append(ConvBNAct(c_in, c_exp, 1, act=act))
        layers.append(ConvBNAct(c_exp, c_exp, k, stride, groups=c_exp, act=act))
        if se:
            layers.append(SqueezeExcite(c_exp))
        layers.append(ConvBNAct(c_exp, c_out, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output (plus input when shapes match)."""
        out: torch.Tensor = self.block(x)
        return out + x if self.residual else out


#: MobileNetV3-Large (Howard et al. 2019, table 1): in, kernel, expanded, out, SE, hard-swish, stride.
_MBV3_LARGE = [
    (16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2), (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2), (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1), (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1), (160, 5, 960, 160, True, True, 1),
]


class MobileNetV3Net(nn.Module):
    """MobileNetV3-Large with torchvision's layout; ``width`` is the width multiplier."""

    def __init__(self, classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        first = _divisible(16 * width)
        layers: list[nn.Module] = [ConvBNAct(3, first, 3, 2)]
        for c_in, k, c_exp, c_out, se, hs, stride in _MBV3_LARGE:
            layers.append(InvertedResidual(_divisible(c_in * width), k, _divisible(c_exp * width),
                                           _divisible(c_out * width), se, nn.Hardswish if hs else nn.ReLU, stride))
        last_in = _divisible(160 * width)
        last_conv = 6 * last_in
        layers.append(ConvBNAct(last_in, last_conv, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(last_conv, 1280), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(1280, classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        out: torch.Tensor = self.classifier(torch.flatten(fn.adaptive_avg_pool2d(self.features(x), 1), 1))
        return out


class MobileNetV3Large(ImageTask):
    """MobileNetV3-Large on 224 px images, 203 classes, minibatch 16 (catalog: ``mobilenetv3-gld23k``).

    Options: ``image_px``, ``width`` (the width multiplier), ``classes``, and the data options.
    """

    name = "mobilenetv3-gld23k"
    catalog_workload = "mobilenetv3-gld23k"
    batch_size = 16
    description = "MobileNetV3-Large, GLD-23k-shaped generated images (224 px, 203 classes)"

    def __init__(self, *, classes: int = 203, **options: Any) -> None:
        super().__init__(classes=classes, **options)

    def build_model(self) -> nn.Module:
        """MobileNetV3-Large (4.5 M parameters at width 1 and 203 classes)."""
        return MobileNetV3Net(self.classes, self.width)


# ---------------------------------------------------------------- ViT-S/16
class EncoderBlock(nn.Module):
    """Pre-norm transformer block: multi-head self-attention (SDPA) and a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention then MLP, each with a residual."""
        x = x + self.drop(self.proj(attention(self.qkv(self.norm1(x)), self.heads)))
        out: torch.Tensor = x + self.mlp(self.norm2(x))
        return out


def attention(qkv: torch.Tensor, heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention of packed ``(B, T, 3 * D)`` projections -> ``(B, T, D)``."""
    b, t, d3 = qkv.shape
    q, k, v = qkv.view(b, t, 3, heads, d3 // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)
    out = fn.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, t, d3 // 3)


class ViTNet(nn.Module):
    """Vision Transformer (Dosovitskiy et al.): patch embedding, class token, pre-norm blocks."""

    def __init__(self, image_px: int, patch: int, dim: int, layers: int, heads: int, classes: int) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        tokens = (image_px // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits from the class token."""
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), patches], dim=1) + self.pos_embed
        out: torch.Tensor = self.head(self.norm(self.blocks(tokens))[:, 0])
        return out


class ViTS16(ImageTask):
    """ViT-S/16 on 224 px images, minibatch 16, AdamW (catalog: ``vit-s16-imagenet``).

    Options: ``image_px``, ``patch`` (16), ``width`` (heads = round(6 x width), 64 dimensions
    each), ``layers`` (12), ``classes``, ``adamw_lr`` (the learning rate of AdamW; the fleet's
    SGD rate does not carry over), and the data options.
    """

    name = "vit-s16-imagenet"
    catalog_workload = "vit-s16-imagenet"
    batch_size = 16
    description = "ViT-S/16, ImageNet-shaped generated images (224 px), AdamW"

    def __init__(self, *, patch: int = 16, layers: int = 12, adamw_lr: float = 3e-4, **options: Any) -> None:
        super().__init__(**options)
        self.patch = int(check_range("patch", patch, low=2, high=self.image_px))
        self.layers = int(check_range("layers", layers, low=1, high=48))
        self.adamw_lr = float(check_range("adamw_lr", adamw_lr, low=0, low_inclusive=False))
        self.heads = max(1, round(6 * self.width))

    def build_model(self) -> nn.Module:
        """ViT-S/16 (22 M parameters at width 1)."""
        return ViTNet(self.image_px, self.patch, 64 * self.heads, self.layers, self.heads, self.classes)

    def make_optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        """AdamW at ``adamw_lr`` with weight decay 0.05 (``lr`` is for SGD tasks and unused)."""
        return torch.optim.AdamW(model.parameters(), lr=self.adamw_lr, weight_decay=0.05)


def param_count(model: nn.Module) -> int:
    """Number of parameters (tied ones once)."""
    return sum(p.numel() for p in model.parameters())

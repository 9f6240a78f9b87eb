"""``YoloDetector``: a YOLOv8n-style anchor-free object detector in plain torch.

Catalog row ``yolov8n-coco``: 320 px images, minibatch 16, 80 classes, data loading in the
main thread (mosaic augmentation in the real pipeline: ``workers=0``). The network follows
YOLOv8n (Ultralytics; width 0.25, depth 0.33): a CSP backbone of ``C2f`` blocks with SPPF, a
PAN neck, and a decoupled head per stride (8, 16, 32) with a 4 x 16-bin box branch and a
class branch.

What is simplified against YOLOv8: the loss. Each object is assigned to one cell - the cell
holding its centre on the level its size belongs to (max side <= 64 px: stride 8, <= 128 px:
stride 16, else 32) - instead of the task-aligned assigner over many candidates; the class
branch takes a binary cross-entropy against those targets, and the box branch an L1 loss on
the (left, top, right, bottom) distances decoded from the 16 bins (their softmax
expectation, as YOLOv8's DFL integral), without the IoU and DFL terms. Targets are dense
maps built by the data loader, so a training step has no data-dependent shapes. There is no
NMS or mAP: :meth:`YoloDetector.evaluate` reports the loss and the fraction of objects whose
assigned cell scores their class highest.

Generated data: a noisy background with one to three objects - filled rectangles, ellipses
or rings whose colour and shape identify their class - of 16 to 45 % of the image side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as fn
from torch.utils.data import DataLoader, Dataset

from powerfleet.tasks.base import BuiltinTask
from powerfleet.tasks.data import Example, GeneratedData, draw_labels
from powertrain.errors import check_range

STRIDES = (8, 16, 32)
#: Objects up to this many pixels on their longer side go to the level of the same index.
LEVEL_MAX_PX = (64, 128, float("inf"))
REG_MAX = 16  # bins per box side, as YOLOv8


# ---------------------------------------------------------------- network
class Conv(nn.Sequential):
    """Conv2d (no bias) + BatchNorm + SiLU, as Ultralytics' ``Conv``."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False),
                         nn.BatchNorm2d(c_out, eps=0.001, momentum=0.03), nn.SiLU())


class Bottleneck(nn.Module):
    """Two 3x3 convs with an optional residual."""

    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 3), Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output."""
        out: torch.Tensor = self.cv2(self.cv1(x))
        return x + out if self.add else out


class C2f(nn.Module):
    """CSP bottleneck with two convolutions (YOLOv8): split, ``n`` bottlenecks, concatenate all."""

    def __init__(self, c_in: int, c_out: int, n: int, shortcut: bool) -> None:
        super().__init__()
        self.c = c_out // 2
        self.cv1 = Conv(c_in, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c_out, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated features through the last 1x1 conv."""
        ys = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            ys.append(block(ys[-1]))
        out: torch.Tensor = self.cv2(torch.cat(ys, 1))
        return out


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools concatenated."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.cv1 = Conv(c_in, c_in // 2, 1)
        self.cv2 = Conv(c_in // 2 * 4, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features."""
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(fn.max_pool2d(y[-1], 5, 1, 2))
        out: torch.Tensor = self.cv2(torch.cat(y, 1))
        return out


class YoloNet(nn.Module):
    """YOLOv8n-shaped detector: outputs one ``(B, 4 * 16 + classes, H/s, W/s)`` map per stride."""

    def __init__(self, classes: int = 80, width: float = 1.0) -> None:
        super().__init__()
        c = [max(8, round(v * width)) for v in (16, 32, 64, 128, 256)]
        self.b1 = nn.Sequential(Conv(3, c[0], 3, 2), Conv(c[0], c[1], 3, 2), C2f(c[1], c[1], 1, True))
        self.b2 = nn.Sequential(Conv(c[1], c[2], 3, 2), C2f(c[2], c[2], 2, True))  # P3 / 8
        self.b3 = nn.Sequential(Conv(c[2], c[3], 3, 2), C2f(c[3], c[3], 2, True))  # P4 / 16
        self.b4 = nn.Sequential(Conv(c[3], c[4], 3, 2), C2f(c[4], c[4], 1, True), SPPF(c[4], c[4]))  # P5 / 32
        self.up4 = C2f(c[4] + c[3], c[3], 1, False)
        self.up3 = C2f(c[3] + c[2], c[2], 1, False)
        self.down3 = Conv(c[2], c[2], 3, 2)
        self.pan4 = C2f(c[2] + c[3], c[3], 1, False)
        self.down4 = Conv(c[3], c[3], 3, 2)
        self.pan5 = C2f(c[3] + c[4], c[4], 1, False)
        c_box, c_cls = max(16, c[2] // 4, REG_MAX * 4), max(c[2], min(classes, 100))
        self.box = nn.ModuleList(nn.Sequential(Conv(ch, c_box, 3), Conv(c_box, c_box, 3),
                                               nn.Conv2d(c_box, 4 * REG_MAX, 1)) for ch in (c[2], c[3], c[4]))
        self.cls = nn.ModuleList(nn.Sequential(Conv(ch, c_cls, 3), Conv(c_cls, c_cls, 3),
                                               nn.Conv2d(c_cls, classes, 1)) for ch in (c[2], c[3], c[4]))
        for head in self.cls:  # a low prior for "object here", as YOLOv8's bias init
            last = list(head.children())[-1]
            assert isinstance(last, nn.Conv2d) and last.bias is not None
            nn.init.constant_(last.bias, -4.0)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-level raw outputs: 64 box-bin logits then class logits."""
        p3 = self.b2(self.b1(x))
        p4 = self.b3(p3)
        p5 = self.b4(p4)
        n4 = self.up4(torch.cat([fn.interpolate(p5, scale_factor=2.0, mode="nearest"), p4], 1))
        n3 = self.up3(torch.cat([fn.interpolate(n4, scale_factor=2.0, mode="nearest"), p3], 1))
        o4 = self.pan4(torch.cat([self.down3(n3), n4], 1))
        o5 = self.pan5(torch.cat([self.down4(o4), p5], 1))
        return [torch.cat([self.box[i](f), self.cls[i](f)], 1) for i, f in enumerate((n3, o4, o5))]


# ---------------------------------------------------------------- data
def _class_look(seed: int, label: int) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng([seed, 5151, label])
    return rng.uniform(-1.5, 1.5, size=3), int(label % 3)


def make_scene(rng: np.random.Generator, label: int, *, seed: int, classes: int,
               px: int) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """A ``(3, px, px)`` image and its objects ``(class, x0, y0, x1, y1)``; the first has class ``label``."""
    img = rng.normal(0.0, 0.5, size=(3, px, px))
    ys, xs = np.mgrid[0:px, 0:px]
    objects = []
    for j in range(int(rng.integers(1, 4))):
        cls = label if j == 0 else int(rng.integers(0, classes))
        w, h = rng.uniform(0.16, 0.45, size=2) * px
        x0, y0 = rng.uniform(0, px - w), rng.uniform(0, px - h)
        colour, shape = _class_look(seed, cls)
        cx, cy = x0 + w / 2, y0 + h / 2
        r2 = ((xs - cx) / (w / 2)) ** 2 + ((ys - cy) / (h / 2)) ** 2
        if shape == 0:
            mask = (xs >= x0) & (xs < x0 + w) & (ys >= y0) & (ys < y0 + h)
        elif shape == 1:
            mask = r2 <= 1.0
        else:
            mask = (r2 <= 1.0) & (r2 >= 0.45)
        img[:, mask] = colour[:, None] + rng.normal(0.0, 0.2, size=(3, int(mask.sum())))
        objects.append((cls, x0, y0, x0 + w, y0 + h))
    return img.astype(np.float32), objects


def dense_targets(objects: list[tuple[int, float, float, float, float]], classes: int,
                  px: int) -> tuple[torch.Tensor, ...]:
    """Per level: class targets ``(C, H, W)``, box distances ``(4, H, W)`` in stride units, mask ``(1, H, W)``."""
    out: list[torch.Tensor] = []
    for level, stride in enumerate(STRIDES):
        size = px // stride
        cls_t = np.zeros((classes, size, size), np.float32)
        box_t = np.zeros((4, size, size), np.float32)
        mask = np.zeros((1, size, size), np.float32)
        lo = LEVEL_MAX_PX[level - 1] if level else 0.0
        for c, x0, y0, x1, y1 in objects:
            if not lo < max(x1 - x0, y1 - y0) <= LEVEL_MAX_PX[level]:
                continue
            gx = min(int((x0 + x1) / 2 / stride), size - 1)
            gy = min(int((y0 + y1) / 2 / stride), size - 1)
            ax, ay = (gx + 0.5) * stride, (gy + 0.5) * stride
            cls_t[c, gy, gx] = 1.0
            box_t[:, gy, gx] = np.clip(np.array([ax - x0, ay - y0, x1 - ax, y1 - ay]) / stride, 0, REG_MAX - 1.01)
            mask[0, gy, gx] = 1.0
        out += [torch.from_numpy(cls_t), torch.from_numpy(box_t), torch.from_numpy(mask)]
    return tuple(out)


class YoloDetector(BuiltinTask):
    """YOLOv8n-style detection on 320 px images, 80 classes, minibatch 16 (catalog: ``yolov8n-coco``).

    Options: ``image_px`` (a multiple of 32), ``width`` (channel multiplier), ``classes``,
    and the data options (``workers`` defaults to 0: loading in the main thread). What is
    simplified against YOLOv8 is in the module docstring.
    """

    name = "yolov8n-coco"
    catalog_workload = "yolov8n-coco"
    batch_size = 16
    description = "YOLOv8n-style anchor-free detector, COCO-shaped generated scenes (320 px, 80 classes)"

    def __init__(self, *, image_px: int = 320, width: float = 1.0, classes: int = 80, n_train: int = 4096,
                 n_test: int = 256, partitioner: str = "dirichlet", alpha: float = 0.5, workers: int = 0) -> None:
        super().__init__()
        self.image_px = int(check_range("image_px", image_px, low=64, high=1280))
        if self.image_px % 32:
            raise ValueError(f"image_px {image_px} must be a multiple of 32 (the largest stride)")
        self.width = float(check_range("width", width, low=0.1, high=8))
        self.classes = int(check_range("classes", classes, low=1))
        self._init_data(n_train=n_train, n_test=n_test, partitioner=partitioner, alpha=alpha, workers=workers)
        self.input_shape = (3, self.image_px, self.image_px)  # type: ignore[misc]

    def build_model(self) -> nn.Module:
        """The detector (3.2 M parameters at width 1 and 80 classes)."""
        return YoloNet(self.classes, self.width)

    def generate(self, n: int, seed: int, stream: int) -> GeneratedData:
        """Generated scenes with dense per-level targets; the label is the first object's class."""
        px, classes = self.image_px, self.classes

        def make(rng: np.random.Generator, label: int) -> Example:
            img, objects = make_scene(rng, label, seed=seed, classes=classes, px=px)
            return (torch.from_numpy(img), *dense_targets(objects, classes, px))

        return GeneratedData(draw_labels(n, classes, seed, stream), seed, make)

    def train_step(self, model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> float:
        """One minibatch: the image is the first tensor of the batch, the dense targets the rest."""
        images, *targets = batch
        return super().train_step(model, (images, tuple(targets)), optimizer)

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        """Class BCE over all cells (normalised by objects) + L1 on the decoded box distances."""
        bins = torch.arange(REG_MAX, dtype=torch.float32, device=output[0].device)
        cls_loss = output[0].new_zeros(())
        box_loss = output[0].new_zeros(())
        n_obj = output[0].new_zeros(())
        for level, out in enumerate(output):
            cls_t, box_t, mask = target[3 * level: 3 * level + 3]
            box_logits, cls_logits = out[:, : 4 * REG_MAX], out[:, 4 * REG_MAX:]
            cls_loss = cls_loss + fn.binary_cross_entropy_with_logits(cls_logits, cls_t, reduction="sum")
            b, _, h, w = box_logits.shape
            dist = (box_logits.view(b, 4, REG_MAX, h, w).softmax(2) * bins.view(1, 1, -1, 1, 1)).sum(2)
            box_loss = box_loss + ((dist - box_t).abs() * mask).sum()
            n_obj = n_obj + mask.sum()
        total: torch.Tensor = (cls_loss + box_loss) / n_obj.clamp(min=1.0)
        return total

    def evaluate(self, model: nn.Module, data: Dataset[Any]) -> dict[str, float]:
        """``loss`` and ``accuracy``: the fraction of objects whose cell ranks their class first."""
        model.eval()
        total, count, hits, objects = 0.0, 0, 0, 0
        with torch.no_grad():
            for images, *targets in DataLoader(data, batch_size=64):
                out = model(images)
                total += float(self.loss(out, targets)) * len(images)
                count += len(images)
                for level, o in enumerate(out):
                    cls_t, mask = targets[3 * level], targets[3 * level + 2][:, 0] > 0
                    pred = o[:, 4 * REG_MAX:].argmax(1)
                    hits += int((pred[mask] == cls_t.argmax(1)[mask]).sum())
                    objects += int(mask.sum())
        return {"loss": total / max(count, 1), "accuracy": hits / max(objects, 1)}

"""The built-in tasks: catalog shapes at their defaults, learnable generated data at tiny
sizes, federated partitioning, option checks, and real data sets through flwr-datasets."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from powerfleet.protocol.tasks import Task, TaskError, Trainer, load_task, seeded_model
from powerfleet.tasks.base import BuiltinTask
from powerfleet.tasks.data import cached_arrays, iid_partition, partition, partition_indices
from powertrain.workloads import get_workload

ROOT = Path(__file__).resolve().parents[1]

#: Each built-in task at a tiny size (fast on a CPU) and the steps / rate it is trained with.
TINY = {
    "resnet18": ("powerfleet.tasks.vision:ResNet18?image_px=32&width=0.125&classes=4&n_train=512&workers=0", 0.05),
    "mobilenetv3": ("powerfleet.tasks.vision:MobileNetV3Large?image_px=64&width=0.35&classes=4&n_train=512"
                    "&workers=0", 0.05),
    "vit": ("powerfleet.tasks.vision:ViTS16?image_px=32&patch=8&width=0.34&layers=2&classes=4&n_train=512"
            "&workers=0", 0.05),
    "yolo": ("powerfleet.tasks.detection:YoloDetector?image_px=64&width=0.25&classes=3&n_train=512", 0.05),
    "bert-qa": ("powerfleet.tasks.text:BertBase?seq_len=32&width=0.17&layers=2&vocab=200&n_train=512&workers=0"
                "&adamw_lr=0.001", 0.05),
    "bert-cls": ("powerfleet.tasks.text:BertBase?head=cls&classes=4&seq_len=32&width=0.34&layers=2&vocab=200"
                 "&n_train=512&workers=0&adamw_lr=0.001", 0.05),
    "lstm": ("powerfleet.tasks.text:TiedLSTM?vocab=100&width=0.5&n_train=2048&workers=0&sgd_lr=5", 0.05),
    "kws": ("powerfleet.tasks.speech:KeywordSpotting?width=0.2&classes=4&n_train=512&workers=0", 0.05),
}
#: The default-size tasks, by the catalog row they match.
DEFAULTS = {
    "resnet18-imagenet": "powerfleet.tasks.vision:ResNet18",
    "mobilenetv3-gld23k": "powerfleet.tasks.vision:MobileNetV3Large",
    "yolov8n-coco": "powerfleet.tasks.detection:YoloDetector",
    "bert-base-squad": "powerfleet.tasks.text:BertBase",
    "lstm-wikitext": "powerfleet.tasks.text:TiedLSTM",
    "vit-s16-imagenet": "powerfleet.tasks.vision:ViTS16",
    "kws-dscnn-speechcommands": "powerfleet.tasks.speech:KeywordSpotting",
}
#: Input shape of one example and parameters (millions) of the published models.
SHAPES = {
    "resnet18-imagenet": ((3, 224, 224), 11.69),  # torchvision resnet18
    "mobilenetv3-gld23k": ((3, 224, 224), 4.46),  # mobilenet_v3_large (5.48 M) with 203 classes
    "yolov8n-coco": ((3, 320, 320), 3.16),  # YOLOv8n: 3.2 M
    "bert-base-squad": ((128,), 108.9),  # BERT-base 110 M with its MLM pooler; QA head instead
    "lstm-wikitext": ((8,), 8.51),  # 29 k x 256 tied embedding (7.4 M) + 2 LSTM layers + decoder bias
    "vit-s16-imagenet": ((3, 224, 224), 22.05),  # timm vit_small_patch16_224: 22.1 M
    "kws-dscnn-speechcommands": ((1, 49, 10), 0.14),  # DS-CNN-M
}


def _meta_params(task: Task) -> int:
    with torch.device("meta"):
        model = task.build_model()
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("workload", list(DEFAULTS))
def test_defaults_match_the_catalog_row(workload: str) -> None:
    task = load_task(DEFAULTS[workload])
    assert isinstance(task, BuiltinTask)
    row = get_workload(workload)
    info = task.info()
    shape, params_m = SHAPES[workload]
    assert info.name == workload == task.catalog_workload
    assert info.batch_size == row.batch_size == 16
    assert info.input_shape == shape
    assert _meta_params(task) / 1e6 == pytest.approx(params_m, rel=0.03)
    assert task.workers == row.loader_workers


@pytest.mark.parametrize("key", list(TINY))
def test_generated_data_is_learnable(key: str) -> None:
    """A tiny version of each task really trains: its loss falls within a few dozen steps."""
    torch.set_num_threads(1)
    reference, lr = TINY[key]
    task = load_task(reference)
    model = seeded_model(task, 0)
    trainer = Trainer(task, model, task.train_data(0, 1, 0), lr=lr, seed=0)
    for i in range(40):
        trainer.step(i)
    early, late = np.mean(trainer.losses[:3]), np.mean(trainer.losses[-8:])
    assert late < 0.85 * early, (early, late)
    metrics = task.evaluate(model, torch.utils.data.Subset(task.test_data(0), range(64)))
    assert np.isfinite(metrics["loss"]) and 0.0 <= metrics["accuracy"] <= 1.0


def test_examples_are_deterministic_and_test_data_differs() -> None:
    task = load_task(TINY["kws"][0])
    a, b = task.train_data(0, 1, 3), task.train_data(0, 1, 3)
    assert torch.equal(a[5][0], b[5][0])
    assert not torch.equal(task.test_data(3)[5][0], a[5][0])
    assert not torch.equal(task.train_data(0, 1, 4)[5][0], a[5][0])  # another seed, other data


def test_generated_data_is_cached_as_plain_arrays_and_rebuilt_when_damaged(tmp_path: Path) -> None:
    """Flower runs each message in a fresh process: a generated data set is rendered once per
    node, and a damaged, foreign or unwritable cache costs only the rebuild."""
    built: list[int] = []

    def build() -> dict[str, np.ndarray]:
        built.append(1)
        return {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "y": np.array([0, 1, 2])}

    def valid(a: dict[str, np.ndarray]) -> bool:
        return a["x"].shape == (3, 4) and a["y"].shape == (3,)

    first = cached_arrays("k", build, valid, tmp_path)
    again = cached_arrays("k", build, valid, tmp_path)
    assert len(built) == 1 and all(np.array_equal(first[k], again[k]) for k in first)
    assert [p.name for p in tmp_path.iterdir()] == ["k.npz"]  # no temporary file left
    for damage in (b"garbage", (tmp_path / "k.npz").read_bytes()[:100]):
        (tmp_path / "k.npz").write_bytes(damage)
        assert np.array_equal(cached_arrays("k", build, valid, tmp_path)["x"], first["x"])
    np.savez(tmp_path / "k.npz", x=np.zeros(2), y=np.zeros(2))  # readable, but not what build makes
    assert np.array_equal(cached_arrays("k", build, valid, tmp_path)["x"], first["x"])
    np.savez(tmp_path / "k.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(3))  # a pickle: never loaded
    assert np.array_equal(cached_arrays("k", build, valid, tmp_path)["x"], first["x"])
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert np.array_equal(cached_arrays("k", build, valid, blocked / "sub")["x"], first["x"])  # unwritable
    assert len(built) == 6


def test_dirichlet_partitions_are_label_skewed_and_iid_ones_are_not() -> None:
    labels = np.random.default_rng(0).integers(0, 10, size=5000)
    skewed = partition(labels, 8, 0.1, seed=1)
    iid = iid_partition(len(labels), 8, seed=1)

    def mean_entropy(parts: list[np.ndarray]) -> float:
        out = []
        for p in parts:
            counts = np.bincount(labels[p], minlength=10) / len(p)
            out.append(-(counts[counts > 0] * np.log(counts[counts > 0])).sum())
        return float(np.mean(out))

    assert mean_entropy(skewed) < 0.7 * mean_entropy(iid)
    assert mean_entropy(iid) > 0.95 * np.log(10)
    together = np.concatenate(iid)
    assert len(together) == len(labels) and len(np.unique(together)) == len(labels)  # disjoint, complete
    assert all(len(p) >= 16 for p in partition(labels[:40], 8, 0.05, seed=2))  # topped up to a minibatch
    first = partition_indices(labels, 3, 8, partitioner="dirichlet", alpha=0.1, seed=1)
    assert np.array_equal(first, skewed[3])
    assert np.array_equal(partition_indices(labels, 11, 8, partitioner="iid", alpha=1.0, seed=1), iid[3])


def test_builtin_task_partitions_follow_the_partitioner() -> None:
    base = TINY["resnet18"][0]
    iid = load_task(base + "&partitioner=iid")
    parts = [set(iid.train_data(p, 4, 0).indices) for p in range(4)]  # type: ignore[attr-defined]
    assert sum(len(p) for p in parts) == 512 and len(set().union(*parts)) == 512
    skew = load_task(base + "&partitioner=dirichlet&alpha=0.05")
    labels = skew.train_data(0, 1, 0).dataset.labels  # type: ignore[attr-defined]
    shares = [np.bincount(labels[list(skew.train_data(p, 4, 0).indices)], minlength=4)  # type: ignore[attr-defined]
              for p in range(4)]
    assert max(s.max() / s.sum() for s in shares) > 0.6  # some node is dominated by one class


def test_digits_uses_the_shared_partitioner() -> None:
    from powerfleet.tasks.digits import Digits, make_dataset, node_data

    train, _ = make_dataset(0, 600, 100)
    digits = Digits(n_train=600, n_test=100)
    assert np.array_equal(digits.train_data(1, 3, 0).tensors[1].numpy(),  # type: ignore[attr-defined]
                          train.subset(partition(train.y, 3, 0.5, 0)[1]).y)
    assert len(node_data(0, 3, 0)) >= 16


@pytest.mark.parametrize(("reference", "named"), [
    ("powerfleet.tasks.vision:ResNet18?partitioner=shards", "partitioner 'shards' is not known; valid: iid, dirichlet"),
    ("powerfleet.tasks.vision:ResNet18?image_px=8", "image_px must be in [16, 1024]; got 8"),
    ("powerfleet.tasks.text:BertBase?head=mlm", "head 'mlm' is not known; valid names: qa, cls"),
    ("powerfleet.tasks.vision:ViTS16?dataset=imagenet", "dataset 'imagenet' is not known"),
    ("powerfleet.tasks.speech:KeywordSpotting?dataset=hf:x", "unexpected keyword argument 'dataset'"),
    ("powerfleet.tasks.detection:YoloDetector?image_px=100", "image_px 100 must be a multiple of 32"),
    ("powerfleet.tasks.vision:ResNet18?depth=3", "unexpected keyword argument 'depth'"),
])
def test_bad_options_are_one_line_naming_them(reference: str, named: str) -> None:
    with pytest.raises(TaskError) as info:
        load_task(reference)
    assert named in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- real data sets (flwr-datasets)
@pytest.fixture()
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline, with the datasets cache in a temporary directory."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    return tmp_path


def _write_parquet(directory: Path, columns: dict[str, Any], features: object, split: str) -> None:
    import datasets

    directory.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(directory / f"{split}.parquet"))


def test_a_local_image_dataset_trains_through_flwr_datasets(hf_env: Path) -> None:
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)})
    for split, n in (("train", 90), ("test", 20)):
        labels = rng.integers(0, 3, size=n).tolist()
        images = [Image.fromarray(np.full((20, 24, 3), 60 * y + 20, dtype=np.uint8)) for y in labels]
        _write_parquet(hf_env / "tiny", {"img": images, "label": labels}, features, split)
    reference = (f"powerfleet.tasks.vision:ResNet18?dataset=hf:{hf_env / 'tiny'}&image_px=32&width=0.125"
                 "&classes=3&workers=0&partitioner=dirichlet&alpha=0.3")
    task = load_task(reference)
    parts: list[Any] = [task.train_data(p, 3, 0) for p in range(3)]
    assert sum(len(p) for p in parts) == 90  # Dirichlet partitions of the whole train split
    image, label = parts[0][0]
    assert image.shape == (3, 32, 32) and 0 <= int(label) < 3
    assert len(task.test_data(0)) == 20  # type: ignore[arg-type]
    trainer = Trainer(task, seeded_model(task, 0), parts[int(np.argmax([len(p) for p in parts]))], lr=0.05, seed=0)
    trainer.step(0)
    assert np.isfinite(trainer.losses[0])
    iid = load_task(reference.replace("partitioner=dirichlet", "partitioner=iid"))
    assert [len(iid.train_data(p, 3, 0)) for p in range(3)] == [30, 30, 30]  # type: ignore[arg-type]


def test_a_local_text_dataset_feeds_bert_and_the_language_model(hf_env: Path) -> None:
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(num_classes=2)})
    texts = [("good fine great " if i % 2 else "bad awful poor ") * 3 for i in range(40)]
    for split in ("train", "test"):
        _write_parquet(hf_env / "text", {"text": texts, "label": [i % 2 for i in range(40)]}, features, split)
    bert = load_task(f"powerfleet.tasks.text:BertBase?head=cls&dataset=hf:{hf_env / 'text'}&seq_len=16"
                     "&width=0.17&layers=1&vocab=500&workers=0")
    ids, label = bert.train_data(0, 2, 0)[0]
    assert ids.shape == (16,) and ids[0] == 1 and int(label) in (0, 1)
    lm = load_task(f"powerfleet.tasks.text:TiedLSTM?dataset=hf:{hf_env / 'text'}&vocab=500&width=0.1&workers=0")
    tokens, target = lm.train_data(0, 2, 0)[0]
    assert tokens.shape == target.shape == (8,) and torch.equal(tokens[1:], target[:-1])


def test_a_dataset_without_a_held_out_split_is_named(hf_env: Path) -> None:
    import datasets

    features = datasets.Features({"text": datasets.Value("string")})
    _write_parquet(hf_env / "only-train", {"text": ["a b c d e f g h i j k"] * 8}, features, "train")
    lm = load_task(f"powerfleet.tasks.text:TiedLSTM?dataset=hf:{hf_env / 'only-train'}&vocab=50&workers=0")
    assert lm.partitioner == "iid"  # type: ignore[attr-defined]  # running text: no label to skew by
    assert len(lm.train_data(0, 1, 0)) == 10  # type: ignore[arg-type]
    with pytest.raises(TaskError, match=r"has no test or validation split: .*'train'"):
        lm.test_data(0)


def test_an_unknown_dataset_offline_is_one_line_naming_it(hf_env: Path) -> None:
    task = load_task("powerfleet.tasks.vision:ResNet18?dataset=hf:nonexistent-org/nothing-here&workers=0")
    started = time.monotonic()
    with pytest.raises(TaskError) as info:
        task.train_data(0, 2, 0)
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert "hf:nonexistent-org/nothing-here" in message and "\n" not in message


def test_an_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without offline mode the hub is probed first: a refused connection is one line at once,
    not half a minute of retries."""
    import socket

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    task = load_task("powerfleet.tasks.text:BertBase?head=cls&dataset=hf:someone/some-text&workers=0")
    started = time.monotonic()
    with pytest.raises(TaskError, match=r"dataset hf:someone/some-text cannot be reached: no connection to 127.0.0.1"):
        task.test_data(0)
    assert time.monotonic() - started < 10


def test_the_cli_names_an_unreachable_dataset_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path),
           "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "powerfleet", "characterize", "--task",
                           "powerfleet.tasks.vision:ViTS16?dataset=hf:no-such/dataset"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "hf:no-such/dataset" in lines[0] and "Traceback" not in proc.stderr



def test_the_readme_task_example_loads_trains_and_is_fingerprinted(tmp_path: Path) -> None:
    """The README's "Your own task" file, as written, passes the check every run makes."""
    import re

    from powerfleet.protocol.tasks import check_task, fingerprint

    match = re.search(r"```python\n(# my_task.py\n.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert match, "README.md has no my_task.py example"
    path = tmp_path / "my_task.py"
    path.write_text(match.group(1))
    task = load_task(f"{path}:Blobs")
    assert check_task(task) == fingerprint(task) and fingerprint(task).startswith("my-blobs+")
    model = seeded_model(task, 0)
    trainer = Trainer(task, model, task.train_data(0, 2, 0), lr=0.05, seed=0)
    for i in range(60):
        trainer.step(i)
    assert task.evaluate(model, task.test_data(0))["accuracy"] > 0.6  # four classes: it learns

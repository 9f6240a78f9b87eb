"""``powerfleet store``: listing, provenance, delete, export/import, and one-line errors."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import pandas as pd
import pytest

from coordinator.store.base import BackendStore
from coordinator.store.local_store import LocalModelStore
from coordinator.store.redis_store import RedisModelStore
from powerfleet.serde import encode_predictor, load_model
from powertrain.predictor import PredictorState
from tests.store.conftest import craft, nan_weight, variant, wrong_architecture, wrong_shape

NANO = ("orin-nano", "lstm-wikitext")


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture()
def filled(tmp_path: Path, ref_state: PredictorState, ref_profile: pd.DataFrame) -> str:
    """A local store with a reference, a transfer of it (two versions) and samples."""
    store = LocalModelStore(tmp_path / "src.sqlite")
    ref = store.put(ref_state, labels={"rule": "reference-fit"})
    store.put(variant(ref_state, *NANO, kind="transfer", parent_id=ref.artifact_id, n_samples=12),
              labels={"rule": "reference"})
    store.put(variant(ref_state, *NANO, kind="transfer", parent_id=ref.artifact_id, n_samples=20))
    store.append_profile(*NANO, ref_profile.head(12))
    store.close()
    return f"file://{tmp_path / 'src.sqlite'}"


def test_ls_show_history(cli, filled: str) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli("store", "ls", "--store", filled)
    assert code == 0, err
    assert "orin-agx" in out and "orin-nano" in out and "reference-fit" in out
    code, out, _ = cli("store", "ls", "--store", filled, "--json")
    rows = json.loads(out)
    assert [(r["device_type"], r["version"]) for r in rows] == [("orin-agx", 1), ("orin-nano", 2)]
    code, out, err = cli("store", "show", *NANO, "--version", "1", "--store", filled)
    assert code == 0, err
    assert "orin-nano/lstm-wikitext v1" in out and "rule: reference" in out and "CV MAPE" in out
    code, out, err = cli("store", "history", *NANO, "--store", filled)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("orin-nano/lstm-wikitext v2") and "<- orin-agx/resnet18-imagenet v1" in out


def test_env_var_names_the_store(cli, filled: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("POWERFLEET_STORE", filled)
    code, out, _ = cli("store", "ls", "--json")
    assert code == 0 and len(json.loads(out)) == 2


def test_rm(cli, filled: str) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("store", "rm", *NANO, "--store", filled)
    _one_line_error(code, err, "--version N or --all")
    code, _, err = cli("store", "rm", *NANO, "--version", "2", "--store", filled)
    assert code == 0 and "deleted orin-nano/lstm-wikitext v2" in err
    code, _, err = cli("store", "rm", *NANO, "--version", "2", "--store", filled)
    _one_line_error(code, err, "orin-nano/lstm-wikitext v2", "nothing deleted")
    code, _, err = cli("store", "rm", *NANO, "--all", "--profile", "--store", filled)
    assert code == 0, err
    code, out, _ = cli("store", "ls", "--store", filled, "--json")
    assert [r["device_type"] for r in json.loads(out)] == ["orin-agx"]


def test_export_import_bundle_round_trip(cli, filled: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle = tmp_path / "fleet.pfb"
    code, _, err = cli("store", "export", "-o", str(bundle), "--all-versions", "--store", filled)
    assert code == 0, err
    assert "3 artifact(s) and 1 profile chunk(s)" in err
    target = f"file://{tmp_path / 'air-gapped.sqlite'}"
    code, _, err = cli("store", "import", str(bundle), "--store", target)
    assert code == 0 and "imported 3 artifact(s) (0 already present) and 1 profile chunk(s)" in err
    src, dst = LocalModelStore(filled[7:]), LocalModelStore(target[7:])
    assert [m.artifact_id for m in dst.versions(*NANO)] == [m.artifact_id for m in src.versions(*NANO)]
    assert dst.meta(*NANO, version=1).labels == {"rule": "reference"}
    assert len(dst.get_profile(*NANO)) == 12
    assert [h.ancestors[0].meta is not None for h in dst.history(*NANO)] == [True, True]  # lineage intact
    code, _, err = cli("store", "import", str(bundle), "--store", target)  # idempotent
    assert code == 0 and "imported 0 artifact(s) (3 already present) and 0 profile chunk(s)" in err


def test_export_models_for_boards(cli, filled: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out_dir = tmp_path / "models"
    out_dir.mkdir()
    code, _, err = cli("store", "export", *NANO, "-o", str(out_dir), "--format", "models", "--store", filled)
    assert code == 0, err
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == ["manifest.json", "orin-nano__lstm-wikitext__v2.model"]
    state = load_model(out_dir / files[1])  # a board loads it with the digest checked
    assert (state.device_type, state.workload, state.n_samples) == (*NANO, 20)
    target = f"file://{tmp_path / 'board.sqlite'}"
    code, _, err = cli("store", "import", str(out_dir), "--store", target)
    assert code == 0 and "imported 1 artifact(s)" in err


def test_import_refuses_corrupt_input_and_writes_nothing(cli, filled: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle = tmp_path / "fleet.pfb"
    assert cli("store", "export", "-o", str(bundle), "--store", filled)[0] == 0
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x40
    bad = tmp_path / "bad.pfb"
    bad.write_bytes(bytes(data))
    target = tmp_path / "t.sqlite"
    code, _, err = cli("store", "import", str(bundle), str(bad), "--store", f"file://{target}")
    _one_line_error(code, err, str(bad))
    assert LocalModelStore(target).list_pairs() == []  # the good bundle was not half-imported
    code, _, err = cli("store", "import", str(tmp_path / "missing.pfb"), "--store", f"file://{target}")
    _one_line_error(code, err, "missing.pfb", "not found")


def test_export_errors_leave_no_files(cli, filled: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("store", "export", "-o", str(tmp_path / "no" / "x.pfb"), "--store", filled)
    _one_line_error(code, err, "does not exist")
    code, _, err = cli("store", "export", "orin-nano", "bert-base-squad", "-o", str(tmp_path / "x.pfb"),
                       "--store", filled)
    _one_line_error(code, err, "orin-nano/bert-base-squad")
    code, _, err = cli("store", "export", "-o", str(tmp_path / "x.pfb"), "--format", "zip", "--store", filled)
    _one_line_error(code, err, "--format 'zip'")
    leftovers = [p.name for p in tmp_path.rglob("*") if not p.name.startswith("src.sqlite")]
    assert leftovers == []  # no partial bundle, no temp file


def test_unreachable_redis_and_bad_names(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = cli("store", "ls", "--store", f"redis://127.0.0.1:{port}/0")
    _one_line_error(code, err, f"127.0.0.1:{port}", "does not answer")
    store = f"file://{tmp_path / 's.sqlite'}"
    code, _, err = cli("store", "show", "orin:agx", "x", "--store", store)
    _one_line_error(code, err, "'orin:agx'", "not a valid name")
    code, _, err = cli("store", "show", *NANO, "--store", store)
    _one_line_error(code, err, "no predictor for orin-nano/lstm-wikitext")
    code, _, err = cli("store", "history", *NANO, "--store", store)
    _one_line_error(code, err, "no predictor for orin-nano/lstm-wikitext")


@pytest.mark.redis
def test_cli_on_redis(cli, redis_url: str, ref_state: PredictorState) -> None:  # type: ignore[no-untyped-def]
    ns = f"powerfleet:test:{uuid.uuid4().hex[:8]}"
    store = RedisModelStore(redis_url, namespace=ns)
    try:
        store.put(ref_state)
        sep = "&" if "?" in redis_url else "?"
        code, out, err = cli("store", "ls", "--json", "--store", f"{redis_url}{sep}namespace={ns}")
        assert code == 0, err
        assert [r["workload"] for r in json.loads(out)] == ["resnet18-imagenet"]
    finally:
        store.drop_namespace()


# ---------------------------------------------------------------------- issue 16 regressions
def _store_url(backend: str, tmp_path: Path, redis_url: str) -> tuple[str, BackendStore]:
    if backend == "local":
        store: BackendStore = LocalModelStore(tmp_path / "target.sqlite")
        return f"file://{tmp_path / 'target.sqlite'}", store
    ns = f"powerfleet:test:{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in redis_url else "?"
    return f"{redis_url}{sep}namespace={ns}", RedisModelStore(redis_url, namespace=ns)


def _drop(store: BackendStore) -> None:
    if isinstance(store, RedisModelStore):
        store.drop_namespace()
    store.close()


@pytest.mark.parametrize("mutation", ["nan-weight", "wrong-shape", "wrong-architecture"])
def test_import_checks_meaning_not_only_the_digest(cli, filled: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                  ref_state: PredictorState, mutation: str) -> None:
    mutate = {"nan-weight": nan_weight, "wrong-shape": wrong_shape, "wrong-architecture": wrong_architecture}
    bad = tmp_path / "bad.model"
    bad.write_bytes(craft(encode_predictor(variant(ref_state, *NANO)), mutate[mutation]))
    code, _, err = cli("store", "import", str(bad), "--store", filled)
    _one_line_error(code, err, "bad.model")
    assert [m.version for m in LocalModelStore(filled[7:]).versions(*NANO)] == [1, 2]  # not imported


@pytest.mark.parametrize("backend", ["local", pytest.param("redis", marks=pytest.mark.redis)])
def test_import_is_all_or_nothing(cli, tmp_path: Path, redis_url: str, ref_state: PredictorState,  # type: ignore[no-untyped-def]
                                  ref_profile: pd.DataFrame, backend: str) -> None:
    from powerfleet.serde import Bundle, BundleEntry, encode_bundle, encode_profile_frame

    url, store = _store_url(backend, tmp_path, redis_url)
    try:
        store.append_profile(*NANO, ref_profile.head(3))  # the store's profile of NANO names 4 knobs
        good = encode_predictor(ref_state)
        bad_name = encode_predictor(variant(ref_state, "orin:agx"))
        knobs = ["cpu_cores", "cpu_mhz", "gpu_mhz"]
        other_knobs = encode_profile_frame(ref_profile.head(2), device_type=NANO[0], workload=NANO[1], knobs=knobs)
        for i, bundle in enumerate([Bundle((BundleEntry(good), BundleEntry(bad_name))),
                                    Bundle((BundleEntry(good),), (other_knobs,))]):
            path = tmp_path / f"b{i}.pfb"
            path.write_bytes(encode_bundle(bundle))
            code, _, err = cli("store", "import", str(path), "--store", url)
            assert code == 2 and "Traceback" not in err, err
            assert "error: " in err and ("orin:agx" in err or "knobs" in err), err
            assert store.list_pairs() == [] and store.versions("orin-agx", "resnet18-imagenet") == []
            assert len(store.get_profile(*NANO)) == 3  # the first entry was not committed
    finally:
        _drop(store)


def test_export_fails_for_a_pair_it_cannot_include(cli, filled: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    with sqlite3.connect(filled[7:]) as conn:  # the latest NANO version loses its bytes
        conn.execute("UPDATE versions SET data=X'' WHERE device_type=? AND workload=? AND version=2", NANO)
    out = tmp_path / "out.pfb"
    code, _, err = cli("store", "export", "-o", str(out), "--store", filled)
    assert code == 2 and "cannot include orin-nano/lstm-wikitext" in err and "nothing written" in err, err
    assert "Traceback" not in err and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    code, _, err = cli("store", "export", "orin-agx", "resnet18-imagenet", "-o", str(out), "--store", filled)
    assert code == 0 and out.exists(), err


@pytest.mark.redis
@pytest.mark.parametrize("damage", ["latest-not-int", "pairs-member"])
def test_damaged_redis_index_gives_answers_not_tracebacks(cli, redis_url: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                          ref_state: PredictorState, damage: str) -> None:
    url, store = _store_url("redis", tmp_path, redis_url)
    assert isinstance(store, RedisModelStore)
    try:
        meta = store.put(ref_state)
        if damage == "latest-not-int":
            store.client.hset(store.key("pair", *meta.pair), "latest", "abc")
        else:
            store.client.sadd(store.key("pairs"), "nocolon")
        for args in (["ls"], ["show", *meta.pair], ["export", "-o", str(tmp_path / "x.pfb")], ["history", *meta.pair]):
            code, _out, err = cli("store", *args, "--store", url)
            assert code == 0 and "Traceback" not in err, (args, err)
            assert err.count("warning: ") <= 1, err  # reported once
        assert (tmp_path / "x.pfb").is_file()
    finally:
        _drop(store)


@pytest.mark.parametrize("column, value", [("n_samples", "abc"), ("created_at", "x")])
def test_damaged_sqlite_fields_give_answers_not_tracebacks(cli, filled: str, column: str,  # type: ignore[no-untyped-def]
                                                           value: str) -> None:
    import sqlite3

    with sqlite3.connect(filled[7:]) as conn:
        conn.execute(f"UPDATE versions SET {column}=? WHERE device_type=? AND workload=? AND version=2",
                     (value, *NANO))
    for i, args in enumerate((["ls", "--json"], ["show", *NANO], ["history", *NANO])):
        code, out, err = cli("store", *args, "--store", filled)
        assert code == 0 and "Traceback" not in err, (args, err)
        if i == 0:  # reported once, by the first command: the rebuilt record is written back
            assert f"{column}=" in err and "rebuilt from the artifact bytes" in err
        else:
            assert "warning" not in err, err
    code, out, _ = cli("store", "ls", "--json", "--store", filled)
    nano = next(r for r in json.loads(out) if r["device_type"] == NANO[0])
    assert nano["version"] == 2 and nano["n_samples"] == 20  # from the artifact itself

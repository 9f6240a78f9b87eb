"""``powerfleet store ls|show|history|rm|export|import``: inspect and move stored predictors.

The store is ``--store URL``, else ``$POWERFLEET_STORE``, else the embedded local store (see
``coordinator.store.factory``). ``export`` writes a verified bundle (or ``.model`` files plus a
manifest) for air-gapped boards; ``import`` verifies every digest before writing anything.
The store package is imported inside the commands, so other commands do not pay for it.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from powerfleet.cli._common import err, out
from powertrain.errors import DataFormatError, InvalidParameterError

if TYPE_CHECKING:
    from coordinator.store.base import ArtifactMeta, ModelStore

store_app = typer.Typer(name="store", help="Inspect, delete, export and import stored predictors.",
                        no_args_is_help=True)
StoreOpt = Annotated[str | None, typer.Option(
    "--store", envvar="POWERFLEET_STORE", show_envvar=True,
    help="Store URL: local, file:///path.sqlite, redis://[user:pw@]host:port/db[?namespace=...].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
DeviceArg = Annotated[str, typer.Argument(help="Device type, e.g. orin-nano.")]
WorkloadArg = Annotated[str, typer.Argument(help="Workload, e.g. lstm-wikitext.")]
MANIFEST = "manifest.json"


def register(app: typer.Typer) -> None:
    """Add the ``store`` sub-app to ``app``."""
    app.add_typer(store_app, name="store")


def _open(url: str | None) -> ModelStore:
    from coordinator.store.factory import open_store

    return open_store(url, fallback=False)


def _when(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, tz=_dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


def _short(artifact_id: str) -> str:
    return artifact_id[:19] if artifact_id else "-"


@store_app.command("ls")
def ls_cmd(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List every pair with its latest version."""
    with _open(store) as s:
        metas = s.list_pairs()
        if as_json:
            out.print(json.dumps([m.to_dict() for m in metas], indent=2))
            return
        if not metas:
            err.print(f"no predictors in {s.url}")
            return
        out.print(f"{'device_type':<12} {'workload':<34} {'ver':>4} {'kind':<9} {'rule':<13} {'n':>5} "
                  f"{'size':>9}  {'created':<20} artifact")
        for m in metas:
            out.print(f"{m.device_type:<12} {readable_workload(m.workload):<34} {m.version:>4} {m.kind:<9} "
                      f"{m.labels.get('rule', '-'):<13} {m.n_samples:>5} {m.size_bytes:>9}  "
                      f"{_when(m.created_at):<20} {_short(m.artifact_id)}")


@store_app.command("show")
def show_cmd(device: DeviceArg, workload: WorkloadArg, store: StoreOpt = None,
             version: Annotated[int | None, typer.Option(help="Version (default: latest).")] = None,
             as_json: JsonOpt = False) -> None:
    """Show one version: metadata, provenance and the predictor's chosen methods and CV errors."""
    from powertrain.predictor import PowerTrainPredictor

    with _open(store) as s:
        got = s.get(device, workload, version)
        info: dict[str, Any] = {**got.meta.to_dict(), "predictor": PowerTrainPredictor.from_state(got.state)
                                .describe()}
    if as_json:
        out.print(json.dumps(info, indent=2, default=str))
        return
    m = got.meta
    out.print(f"{m.label}  {m.artifact_id}")
    name, _, digest = m.workload.partition("+")  # a task's fingerprint: name+digest (no torch import here)
    if digest:
        out.print(f"  workload: task {name}, fingerprint {digest} (model structure, parameter shapes, batch and "
                  "input shape)")
    else:
        out.print(f"  workload: catalog workload {name}")
    out.print(f"  kind {m.kind}, {m.n_samples} samples, {m.size_bytes} bytes, created {_when(m.created_at)}, "
              f"stored {_when(m.stored_at)}")
    out.print(f"  parent {m.parent_id or '-'}")
    for k, v in sorted(m.labels.items()):
        out.print(f"  {k}: {v}")
    for name, t in info["predictor"]["targets"].items():
        cv = ", ".join(f"{k} {v:.1f}%" for k, v in sorted(t["cv_mape"].items()))
        out.print(f"  {name}: {t['method']} ({t['members']} x {t['hidden']}), CV MAPE {cv}")


def readable_workload(workload: str) -> str:
    """``digits-cnn+7f4b683ab7`` as ``digits-cnn (task 7f4b683ab7)``; a catalog name as it is."""
    name, _, digest = workload.partition("+")
    return f"{name} (task {digest})" if digest else name


def _describe(m: ArtifactMeta | None, artifact_id: str) -> str:
    if m is None:
        return f"{_short(artifact_id)} (not in this store)"
    rule = m.labels.get("rule")
    return f"{m.label} {m.kind}{f' ({rule})' if rule else ''} {_short(m.artifact_id)}"


@store_app.command("history")
def history_cmd(device: DeviceArg, workload: WorkloadArg, store: StoreOpt = None,
                as_json: JsonOpt = False) -> None:
    """Every version of a pair, newest first, with its lineage across pairs."""
    from coordinator.store.errors import ArtifactNotFoundError

    with _open(store) as s:
        entries = s.history(device, workload)
        url = s.url
    if not entries:
        raise ArtifactNotFoundError(f"no predictor for {device}/{workload} in {url}")
    if as_json:
        out.print(json.dumps([{**e.meta.to_dict(), "ancestors": [
            {"artifact_id": a.artifact_id, **({"pair": [a.meta.device_type, a.meta.workload],
                                              "version": a.meta.version} if a.meta else {"missing": True})}
            for a in e.ancestors]} for e in entries], indent=2))
        return
    for e in entries:
        out.print(f"{_describe(e.meta, e.meta.artifact_id)}  n={e.meta.n_samples}  "
                  f"{_when(e.meta.created_at)}")
        for depth, a in enumerate(e.ancestors, start=1):
            out.print(f"  {'  ' * (depth - 1)}<- {_describe(a.meta, a.artifact_id)}")


@store_app.command("rm")
def rm_cmd(device: DeviceArg, workload: WorkloadArg, store: StoreOpt = None,
           version: Annotated[int | None, typer.Option(help="Delete this version.")] = None,
           all_versions: Annotated[bool, typer.Option("--all", help="Delete every version.")] = False,
           profile: Annotated[bool, typer.Option(help="With --all, delete the pair's samples too.")] = False,
           ) -> None:
    """Delete one version (--version N) or a whole pair (--all)."""
    if (version is None) == (not all_versions):
        raise InvalidParameterError("rm needs exactly one of --version N or --all")
    if profile and not all_versions:
        raise InvalidParameterError("--profile only applies with --all")
    with _open(store) as s:
        removed = s.delete(device, workload, version, profile=profile)
        url = s.url
    for m in removed:
        err.print(f"deleted {m.label} ({_short(m.artifact_id)}) from {url}")
    if profile:
        err.print(f"deleted the samples of {device}/{workload}")


def _model_name(m: ArtifactMeta) -> str:
    return f"{m.device_type}__{m.workload}__v{m.version}.model"


@store_app.command("export")
def export_cmd(
    output: Annotated[Path, typer.Option("-o", "--output",
                                         help="Bundle file, or directory for --format models.")],
    device: Annotated[str | None, typer.Argument(help="Device type (default: every pair).")] = None,
    workload: Annotated[str | None, typer.Argument(help="Workload (with a device type).")] = None,
    store: StoreOpt = None,
    all_versions: Annotated[bool, typer.Option("--all-versions",
                                               help="Every version, not just the latest.")] = False,
    fmt: Annotated[str, typer.Option("--format",
                                     help="bundle (one file) or models (.model files).")] = "bundle",
    profiles: Annotated[bool, typer.Option(help="Include the pairs' samples (bundle only).")] = True,
) -> None:
    """Write artifacts (and samples) to files for air-gapped boards; every value is verified.

    Every pair the store names is included (its samples too, even without a predictor); a pair
    that cannot be included fails the export, and nothing is written.
    """
    from coordinator.store.errors import ArtifactNotFoundError, StoreError
    from powerfleet.serde import Bundle, BundleEntry, encode_bundle
    from powertrain.outputs import atomic_outputs, check_output, check_output_dir

    if fmt not in ("bundle", "models"):
        raise InvalidParameterError(f"--format {fmt!r} must be bundle or models")
    if (device is None) != (workload is None):
        raise InvalidParameterError("export takes a device type and a workload together, or neither")
    if fmt == "models":
        check_output_dir(output, what="--output", create=False)
    else:
        check_output(output, what="--output")
    with _open(store) as s:
        url = s.url
        pairs = [(device, workload)] if device is not None and workload is not None else s.pair_names()
        entries: list[tuple[ArtifactMeta, bytes]] = []
        chunks: list[bytes] = []
        for dt, wl in pairs:
            try:
                has_versions = s.latest_version(dt, wl) > 0 or bool(s.versions(dt, wl))
                if has_versions:
                    metas = s.versions(dt, wl) if all_versions else [s.meta(dt, wl)]
                    if not metas:
                        raise ArtifactNotFoundError(f"no readable version of {dt}/{wl}")
                    entries += [s.get_artifact(dt, wl, m.version) for m in metas]
                pair_chunks = s.profile_chunks(dt, wl) if profiles and fmt == "bundle" else []
            except StoreError as exc:
                raise StoreError(f"store export: cannot include {dt}/{wl} from {url}: {exc}; nothing written") \
                    from None
            if not has_versions and not pair_chunks:
                if device is not None:
                    raise ArtifactNotFoundError(f"no predictor or samples for {dt}/{wl} in {url}")
                continue
            chunks += pair_chunks
    if not entries and not chunks:
        raise InvalidParameterError(f"nothing to export: {url} holds no predictors"
                                    + (" or samples" if fmt == "bundle" else ""))
    if fmt == "bundle":
        data = encode_bundle(Bundle(tuple(BundleEntry(d, m.version, dict(m.labels), m.stored_at)
                                          for m, d in entries), tuple(chunks), source=url))
        with atomic_outputs((output, "--output")) as (tmp,):
            tmp.write_bytes(data)
        err.print(f"wrote {len(entries)} artifact(s) and {len(chunks)} profile chunk(s) from {url} to "
                  f"{output}")
        return
    if not entries:
        raise InvalidParameterError(f"nothing to export: {url} holds no predictors")
    records = [{"file": _model_name(m), **m.to_dict()} for m, _ in entries]
    targets = [(output / _model_name(m), "--output") for m, _ in entries] + [(output / MANIFEST, "--output")]
    with atomic_outputs(*targets) as temps:
        for tmp, (_, d) in zip(temps, entries, strict=False):
            tmp.write_bytes(d)
        temps[-1].write_text(json.dumps({"source": url, "artifacts": records}, indent=2))
    err.print(f"wrote {len(entries)} .model file(s) and {MANIFEST} from {url} to {output}")


def _read_inputs(paths: list[Path]) -> tuple[list[tuple[bytes, dict[str, str]]], list[bytes]]:
    """Every artifact (bytes, labels) and profile chunk in ``paths``, all verified (bytes and meaning)."""
    from powerfleet.serde import decode_bundle, read_artifact_file, verify_predictor

    artifacts: list[tuple[bytes, dict[str, str]]] = []
    chunks: list[bytes] = []
    for path in paths:
        if path.is_dir():
            labels: dict[str, dict[str, str]] = {}
            man = path / MANIFEST
            if man.is_file():
                try:
                    for a in json.loads(man.read_text()).get("artifacts", []):
                        labels[str(a["file"])] = {str(k): str(v)
                                                  for k, v in dict(a.get("labels", {})).items()}
                except (ValueError, KeyError, TypeError, AttributeError, OSError):
                    raise DataFormatError(f"{man}: not a valid export manifest") from None
            files = sorted(path.glob("*.model"))
            if not files:
                raise DataFormatError(f"{path}: no .model files in this directory")
            for f in files:
                data = read_artifact_file(f)
                verify_predictor(data, str(f))
                artifacts.append((data, labels.get(f.name, {})))
        elif not path.exists():
            raise DataFormatError(f"{path}: file not found")
        elif not path.is_file():
            raise DataFormatError(f"{path}: not a regular file")
        elif path.suffix == ".model":
            data = read_artifact_file(path)
            verify_predictor(data, str(path))
            artifacts.append((data, {}))
        else:
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise DataFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
            bundle = decode_bundle(raw, str(path))
            artifacts += [(e.artifact, dict(e.labels)) for e in bundle.entries]
            chunks += list(bundle.profiles)
    return artifacts, chunks


@store_app.command("import")
def import_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Bundles, .model files or export directories.")],
    store: StoreOpt = None,
) -> None:
    """Verify and add exported artifacts (and samples), all or nothing; ones the store holds are skipped."""
    artifacts, chunks = _read_inputs(paths)  # everything verified before anything is written
    with _open(store) as s:
        result = s.import_values(artifacts, chunks)
        url = s.url
    for meta in result.added:
        err.print(f"imported {meta.label} ({_short(meta.artifact_id)})")
    err.print(f"imported {len(result.added)} artifact(s) ({result.skipped} already present) and "
              f"{result.added_chunks} profile chunk(s) into {url}")

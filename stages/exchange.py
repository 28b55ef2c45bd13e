"""The exchange stage: every partner file of schemas/exchange for a run, each with its signed manifest,
and the reject files due back to the departments (transforms/exchange.py and transforms/rejects.py
render the tables; this module publishes them under outbox/ and keeps the delta and receipt state).

Once per batch for reject files: a batch an earlier run already answered keeps its file and manifest
(the department has it); a retry of the same run rewrites the same bytes.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import logging
import os
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa

from core.contracts import SourceContract
from core.publish import MANIFEST, MARKER, private_dir, publish_unit, published_versions, state_dir
from core.results import ExchangeResult
from core.settings import Settings
from core.signing import SigningKey, load_signing_key, write_private
from core.storage import Storage, batches, publish_bytes
from store.master_snapshot import current_master
from store.master_store import MasterStore, open_store
from transforms.exchange import (
    DECISION_DATASETS,
    DECISION_LISTS,
    ExchangeContract,
    ExchangeError,
    ExchangeFile,
    carried_rows,
    delta,
    encode,
    encode_table,
    inputs_digest,
    render,
)
from transforms.rejects import TRAILER, RejectFile, reject_table

log = logging.getLogger(__name__)

INPUTS = ".inputs"  # beside a published file's state: the inputs_digest it was rendered from


def exchange_stage(settings: Settings, as_of: date, run_id: str) -> ExchangeResult:
    """Write every partner file of schemas/exchange for this run, each with its manifest."""
    from core.contracts import contract_for
    from stages.eligibility import hold_contracts, still_held
    from transforms.exchange import exchange_datasets, load_exchange_contracts

    storage = Storage(settings)
    store = open_store(settings)
    contracts = load_exchange_contracts(settings.path("schemas/exchange"))
    wanted = {c.dataset for c in contracts}
    run_dir = storage.run_dir(run_id)
    lists = bool(wanted & set(DECISION_LISTS))
    decisions = run_decisions(store, run_dir / "decisions.parquet", run_id, contracts, lists)
    people = current_master(storage.master_snapshot(store.url), store, ["id_number", "name", "hukou_county"])
    moves_path = run_dir / "transitions.parquet"
    moves = pd.read_parquet(moves_path) if lists and moves_path.exists() else None
    conflicts = store.read_conflicts() if wanted - set(DECISION_DATASETS) else _no_conflicts()
    datasets = exchange_datasets(
        people, decisions, conflicts, moves, departments=settings.merged_sources, wanted=wanted
    )
    contracts, held = hold_contracts(contracts, datasets, still_held(storage, run_id))
    files = build_exchange(storage, contracts, datasets, run_id, as_of)
    sources = {name: contract_for(settings, name) for name in settings.sources}
    rejects = write_pending_rejects(storage, sources, run_id, as_of)
    listed = [
        {
            "partner": f.partner,
            "contract": f.contract,
            "period": f.period,
            "path": str(f.path),
            "manifest": str(f.manifest),
            "rows": f.rows,
            "sha256": f.sha256,
        }
        for f in files
    ]
    returned = [
        {"source": r.source, "batch_id": r.batch_id, "path": str(r.path), "rows": r.rows, "sha256": r.sha256}
        for r in rejects
    ]
    return ExchangeResult(
        run_id=run_id, rows=sum(f.rows for f in files), files=listed, rejects=returned, held=held
    ).save(storage, run_id)


def run_decisions(
    store: MasterStore, path: Path, run_id: str, contracts: list[ExchangeContract], lists: bool
) -> pd.DataFrame:
    """The run's decisions the contracts can send: the eligible rows of the services they name (every
    row when a contract takes the new / continuing / stop lists, which need the whole run), from the
    run's decisions file (the rows the store holds, far cheaper to read; only the columns the contracts
    send) or else from the store."""
    sent = [c for c in contracts if c.dataset in DECISION_DATASETS]
    services = None if any(not c.services for c in sent) else sorted({s for c in sent for s in c.services})
    if path.exists():
        if lists:
            return pd.read_parquet(path)
        filters: list[tuple[str, str, Any]] = [("eligible", "==", True)]
        if services is not None:
            filters.append(("service", "in", services))
        # the contracted fields only (the reasons, the longest text, are sent to no partner)
        fields = {"id_number", "service", "eligible", "amount", *(f for c in sent for f in c.fields)}
        columns = [c for c in pq.read_schema(path).names if c in fields]
        return pd.read_parquet(path, columns=columns, filters=filters)
    decisions = store.read_decisions(run_id)
    if lists:
        return decisions
    keep = decisions["eligible"].astype(bool)
    if services is not None:
        keep &= decisions["service"].isin(services)
    return decisions[keep].reset_index(drop=True)


def _no_conflicts() -> pd.DataFrame:
    """No contract sends a work list: the conflicts are not read."""
    return pd.DataFrame({"id_number": pd.Series(dtype="string"), "status": pd.Series(dtype="string")})


def pseudonym_key(var_dir: Path, contract: ExchangeContract) -> tuple[bytes, str]:
    """The partner's HMAC key (secrets store: environment variable) and its id; sandbox key on first use."""
    value = os.environ.get(contract.pseudonym_key_env)
    if value:
        key = value.encode("utf-8")
    else:
        path = Path(var_dir) / "keys" / f"pseudonym_{contract.partner}.key"
        if not path.exists():
            log.warning(
                "no %s set: generating a sandbox pseudonym key at %s", contract.pseudonym_key_env, path
            )
            write_private(path, os.urandom(32).hex().encode("ascii"))
        key = path.read_bytes().strip()
    if len(key) < 32:
        raise ExchangeError(f"{contract.pseudonym_key_env}: a pseudonym key needs at least 32 bytes")
    return key, "hmac:" + hashlib.sha256(key).hexdigest()[:12]


# -- partner files ---------------------------------------------------------------------------------------------


def acknowledged_name(storage: Storage, contract: ExchangeContract, key_id: str) -> str | None:
    """The file whose state the partner last acknowledged, or None (then a delta is everything, as new)."""
    folder = state_dir(storage, contract.name)
    pointer = folder / "ACKED"
    if not pointer.exists():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    path = folder / f"{name}.parquet"
    if not path.exists():
        return None
    held_key = path.with_suffix(".keyid")
    if held_key.exists() and held_key.read_text(encoding="ascii") != key_id:
        log.warning("%s: pseudonym key rotated since %s; sending everything as new", contract.name, name)
        return None
    return name


def acknowledged_state(
    storage: Storage, contract: ExchangeContract, key_id: str
) -> tuple[str, pd.DataFrame] | None:
    """The state the partner last acknowledged (file name and table), or None."""
    name = acknowledged_name(storage, contract, key_id)
    if name is None:
        return None
    return name, pd.read_parquet(state_dir(storage, contract.name) / f"{name}.parquet").astype("string")


def _render_code() -> str:
    """SHA-256 of the code that renders and encodes a partner file: a new release renders again."""
    import core.masking
    import transforms.exchange

    digest = hashlib.sha256()
    for module in (transforms.exchange, core.masking):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


def _unchanged(
    storage: Storage, contract: ExchangeContract, folder: Path, name: str, inputs: str | None
) -> ExchangeFile | None:
    """The newest published version of `name` when it was rendered from the same inputs, else None."""
    versions = published_versions(folder, name)
    if inputs is None or not versions:
        return None
    version, path = versions[-1]
    recorded = state_dir(storage, contract.name) / f"{path.name}{INPUTS}"
    if not recorded.exists() or recorded.read_text(encoding="ascii") != inputs:
        return None
    manifest = path.with_name(path.name + MANIFEST)
    sent = json.loads(manifest.read_text(encoding="utf-8"))
    return ExchangeFile(
        contract.partner, contract.name, str(sent["period"]), path, manifest, int(sent["rows"]),
        str(sent["sha256"]), version, str(sent["kind"]), sent.get("supersedes"),
    )  # fmt: skip


def write_exchange_file(
    storage: Storage,
    contract: ExchangeContract,
    data: pd.DataFrame,
    run_id: str,
    as_of: date,
    key: SigningKey | None = None,
    full: bool = False,
) -> ExchangeFile:
    """Render, diff (delta contracts), encode and publish one partner file with its signed manifest.

    When the newest published version of the file was rendered from the same inputs (inputs_digest:
    the rows, the contract, the acknowledged base, the key and the code), that version stands as it
    is: nothing is rendered, encoded or read again."""
    key = key or load_signing_key(storage.var)
    period = f"{as_of:%Y-%m}"
    name = contract.file_name.format(
        contract=contract.name, partner=contract.partner, period=period, date=f"{as_of:%Y%m%d}"
    )
    id_key, id_key_id = (None, "")
    if contract.id_mode == "pseudonym" and "id_number" in contract.fields:
        id_key, id_key_id = pseudonym_key(storage.var, contract)
    kind = "snapshot" if contract.mode == "snapshot" or full else "delta"
    base_name = acknowledged_name(storage, contract, id_key_id) if kind == "delta" else None
    if full and contract.mode == "delta":
        stem, dot, ext = name.rpartition(".")
        name = f"{stem}_full.{ext}" if dot else f"{name}_full"
    folder = storage.outbox(contract.partner, period)
    context = (name, as_of.isoformat(), kind, str(base_name), id_key_id, _render_code())
    inputs = inputs_digest(contract, data, *context)
    same = _unchanged(storage, contract, folder, name, inputs)
    if same is not None:
        log.info(
            "exchange %s -> %s: %s, inputs unchanged since it was published",
            contract.name, contract.partner, same.path.name,
        )  # fmt: skip
        return same
    current = render(contract, data, id_key)
    table = current
    if kind == "delta":
        base = None if base_name is None else acknowledged_state(storage, contract, id_key_id)
        table = delta(contract, current, base[1] if base else None)
    payload = encode(contract, table, name, as_of)
    manifest: dict[str, Any] = {
        "contract": contract.name,
        "version": contract.version,
        "partner": contract.partner,
        "department": contract.department,
        "purpose": contract.purpose,
        "onward_transfer": contract.onward_transfer,
        "run_id": run_id,
        "period": period,
        "business_date": as_of.isoformat(),
        "kind": kind,
        "delta_base": base_name,
        "rows": len(table),
        "format": contract.format,
        "encoding": contract.encoding,
        "id_mode": contract.id_mode,
        "pseudonym_key_id": id_key_id or None,
        "columns": list(table.columns),
    }
    unit = publish_unit(folder, name, payload, manifest, key)
    state = private_dir(state_dir(storage, contract.name)) / f"{unit.path.name}.parquet"
    if not state.exists():
        buffer = io.BytesIO()
        current.to_parquet(buffer, index=False)
        publish_bytes(state, buffer.getvalue())
        publish_bytes(state.with_suffix(".keyid"), id_key_id.encode("ascii"))
    if contract.dataset in DECISION_DATASETS and {"id_number", "service"} <= set(data.columns):
        _record_carried(storage, contract, data, current, table, unit.path.name, unit.sha256, run_id, as_of)
    if inputs is not None:  # last: a version whose state and index are written may be skipped next time
        publish_bytes(state.with_name(f"{unit.path.name}{INPUTS}"), inputs.encode("ascii"))
    log.info(
        "exchange %s -> %s: %s, %d rows, sha256 %s%s",
        contract.name,
        contract.partner,
        unit.path.name,
        unit.rows,
        unit.sha256[:12],
        " (unchanged, already published)" if unit.reused else "",
    )
    return ExchangeFile(
        contract.partner, contract.name, period, unit.path, unit.manifest, unit.rows, unit.sha256,
        unit.version, kind, unit.supersedes,
    )  # fmt: skip


def carried_dir(storage: Storage) -> Path:
    """var/state/carried/: per published decision file, the (ID number, service) pairs its rows carry."""
    return storage.var / "state" / "carried"


def _record_carried(
    storage: Storage,
    contract: ExchangeContract,
    data: pd.DataFrame,
    current: pd.DataFrame,
    table: pd.DataFrame,
    file_name: str,
    sha256: str,
    run_id: str,
    as_of: date,
) -> None:
    """Index which eligible (person, service) went into which file, so the audit can tell whose decision
    reached the partner with a receipt (the file itself may not carry the raw ID). Full IDs: 0600/0700."""
    path = private_dir(carried_dir(storage) / contract.name) / f"{file_name}.parquet"
    if path.exists():  # the same bytes published again: the index of that version stands
        return
    rows = carried_rows(contract, data, current, table).assign(
        partner=contract.partner,
        contract=contract.name,
        file=file_name,
        sha256=sha256,
        business_date=pd.Timestamp(as_of),
        run_id=run_id,
    )
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    publish_bytes(path, buffer.getvalue())


def read_carried(storage: Storage) -> pd.DataFrame:
    """Every recorded (person, service, file) of the published decision files, empty when none."""
    paths = sorted(carried_dir(storage).glob("*/*.parquet"))
    columns = ["id_number", "service", "partner", "contract", "file", "sha256", "business_date", "run_id"]
    if not paths:
        return pd.DataFrame({c: pd.Series(dtype="string") for c in columns}).assign(
            business_date=pd.Series(dtype="datetime64[us]")
        )
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)[columns]


def build_exchange(
    storage: Storage,
    contracts: list[ExchangeContract],
    datasets: dict[str, pd.DataFrame],
    run_id: str,
    as_of: date,
    full: bool = False,
) -> list[ExchangeFile]:
    """Publish every contracted partner file for the run under outbox/<partner>/<YYYY-MM>/."""
    key = load_signing_key(storage.var)
    files = []
    for contract in contracts:
        if contract.dataset not in datasets:
            raise ExchangeError(
                f"{contract.path}: key 'dataset': no dataset {contract.dataset!r} (have {sorted(datasets)})"
            )
        rows = datasets[contract.dataset]
        if contract.services:
            rows = rows[rows["service"].isin(contract.services)].reset_index(drop=True)
        files.append(write_exchange_file(storage, contract, rows, run_id, as_of, key, full))
    return files


# -- reject files -----------------------------------------------------------------------------------


def write_reject_file(
    storage: Storage, contract: SourceContract, batch_id: str, run_id: str, as_of: date
) -> RejectFile | None:
    """Write rejects_<batch>.csv and its manifest for one staged batch; None when nothing was quarantined.

    Once per batch: a batch an earlier run already answered keeps its file and manifest (the department
    has it); a retry of the same run rewrites the same bytes, so a retried task returns what a clean one does.
    """
    source = contract.source
    staged = storage.staged(source, batch_id) / "quarantine.parquet"
    if not staged.exists():  # held before staging (schema drift, encoding): validation.html says why
        return None
    name = f"rejects_{batch_id}.csv"
    target = storage.var / "outbox" / source / "rejects" / name
    sent = target.with_name(name + MANIFEST)
    published = target.with_name(name + MARKER).exists()
    if published and json.loads(sent.read_text(encoding="utf-8")).get("run_id") != run_id:
        return None
    quarantine = pd.read_parquet(staged)
    if quarantine.empty:
        return None
    quarantine = quarantine.sort_values(["_source_file", "_source_line"], kind="stable")
    # UTF-8 gets its BOM, or Excel on a Chinese Windows shows the department's own rows garbled
    encoding = "utf-8-sig" if codecs.lookup(contract.encoding).name == "utf-8" else contract.encoding
    payload = encode_table(reject_table(quarantine, contract), encoding, "\r\n", str(target))
    manifest = {
        "contract": f"{source}_rejects",
        "partner": source,
        "department": contract.department,
        "purpose": "退回未通过校验的数据行，供来源部门核实更正后重新报送。",
        "onward_transfer": "本文件仅退回数据来源部门，不得向第三方提供。",
        "run_id": run_id,
        "batch_id": batch_id,
        "period": f"{as_of:%Y-%m}",
        "business_date": as_of.isoformat(),
        "kind": "rejects",
        "rows": len(quarantine),
        "format": "csv",
        "encoding": encoding,
        "id_mode": "raw",
        "columns": [*contract.natives, *TRAILER.values()],
    }
    unit = publish_unit(target.parent, name, payload, manifest, load_signing_key(storage.var))
    log.info(
        "rejects %s batch %s: %d rows back to %s", source, batch_id, len(quarantine), contract.department
    )
    return RejectFile(source, batch_id, unit.path, unit.manifest, unit.rows, unit.sha256)


def write_pending_rejects(
    storage: Storage, contracts: dict[str, SourceContract], run_id: str, as_of: date
) -> list[RejectFile]:
    """Reject files for every staged batch in the ledger that has quarantined rows and none yet."""
    with storage.engine().connect() as conn:
        rows = conn.execute(
            sa.select(batches.c.source, batches.c.batch_id)
            .where(batches.c.quarantined_rows > 0, batches.c.source.in_(list(contracts)))
            .order_by(batches.c.source, batches.c.landed_at)
        ).all()
    written = []
    for source, batch_id in rows:
        made = write_reject_file(storage, contracts[source], batch_id, run_id, as_of)
        if made is not None:
            written.append(made)
    return written

"""One YAML file, validated by pydantic, picks the wiring (sandbox, test or production).

`LIANBAN_CONFIG` names the file (default: config/sandbox.yaml in the checkout) and
`LIANBAN_VAR` the directory every run writes under (default: ./var in the checkout).
Secrets never live in the file: sources name the environment variable that holds them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

if TYPE_CHECKING:
    from core.master_schema import MasterSchema

_CODE = Path(__file__).resolve().parent.parent
# The checkout, or, for an installed wheel, the project files shipped beside the code (pyproject.toml).
ROOT = _CODE if (_CODE / "config" / "sandbox.yaml").is_file() else _CODE / "lianban_files"
GX_DIR = "gx"  # the committed Great Expectations file context under ROOT (gx/README.md)
# var/ beside the checkout; for an installed wheel, in the working directory (never site-packages).
DEFAULT_VAR = ROOT / "var" if ROOT == _CODE else Path("var")


class _Source(BaseModel):
    contract: str
    description: str | None = Field(None, description="what the department sends, for the DAG's docs")
    schedule: str = Field("@daily", description="the ingestion DAG's schedule (cron or preset)")
    merge: bool | None = Field(
        None,
        description="the source feeds the master file; unset: it does when the precedence names it "
        "(audit-only sources are never merged)",
    )
    suite: str | None = Field(
        None,
        description="Great Expectations suite file; default gx/expectations/<source>.json (docs/operations.md, Suites)",
    )
    conn_id: str | None = Field(
        None,
        description="Airflow connection with this source's endpoint and secrets (else the env variables)",
    )


class SqlSource(_Source):
    transport: Literal["sql"]
    url: str = Field(description="SQLAlchemy URL; `{var}` is filled, `${VAR}` is read from the environment")
    table: str
    mode: Literal["full", "incremental"] = "full"
    watermark_column: str | None = Field(None, description="updated_at column of the composite watermark")
    key_columns: list[str] = Field(
        default_factory=list, description="unique key, second part of the watermark"
    )
    overlap_seconds: int = Field(300, description="re-read this far behind the watermark for late commits")
    max_future_skew_seconds: int = Field(
        300,
        ge=0,
        description="incremental mode: a row whose watermark value is later than the run's clock plus this "
        "(the department's clock may run a little ahead) is held out and quarantined, never bookmarked",
    )
    chunk_rows: int = Field(50_000, description="rows fetched per round trip")


class DropWait(BaseModel):
    """How long a drop source's ingestion DAG waits for a ready file before its pull (docs/operations.md)."""

    poke_seconds: float = Field(60, gt=0, description="look for a ready file this often")
    deadline_minutes: float = Field(
        gt=0, description="after this long without a ready file the wait fails, naming the source and folder"
    )
    mode: Literal["reschedule", "poke"] = Field(
        "reschedule",
        description="reschedule frees the worker slot between looks; `hub run` (dag.test) always pokes",
    )


class FolderSource(_Source):
    transport: Literal["folder"]
    path: str
    pattern: str = "*.csv"
    marker: str = Field(".ok", description="a file is taken only once <name><marker> exists")
    wait: DropWait | None = Field(
        None, description="wait for a late file up to a deadline (else fail at once)"
    )


class RestSource(_Source):
    transport: Literal["rest"]
    base_url: str | None = None
    base_url_env: str | None = None
    token_env: str = Field(description="environment variable holding the bearer token")
    endpoint: str
    mode: Literal["pages", "changes"] = Field(
        "pages", description="pages: the whole register page by page; changes: a change feed since a cursor"
    )
    page_size: int = 1000
    timeout_s: float = 30.0
    max_future_skew_seconds: int = Field(
        300,
        ge=0,
        description="change feed: an item updated later than the run's clock plus this is held out and "
        "quarantined, and the cursor stops before it",
    )
    cursor_fields: list[str] = Field(
        default_factory=list,
        description="change feed: item fields whose '|'-joined values are that item's cursor (e.g. [gxsj, gmsfhm]), "
        "so a pull stopped before a future-dated item resumes right after the last item it kept; "
        "empty: it resumes from the start of that page",
    )


class SftpSource(_Source):
    """A partner's SFTP drop folder. Connection values come from `<env_prefix>_*` environment variables.

    Interim home: the lead moves this class to core/settings.py (and into SourceConfig's union).
    """

    transport: Literal["sftp"]
    env_prefix: str | None = Field(
        None,
        description="prefix of HOST, PORT, USER, PASSWORD, KEY, KEY_PASSPHRASE, KNOWN_HOSTS variables; "
        "default LIANBAN_<SOURCE>_SFTP",
    )
    folder: str = Field(description="remote folder the partner drops files into (`{var}` is filled)")
    pattern: str = Field("*.csv", description="glob for data file names")
    marker: str = Field(".ok", min_length=1, description="a file is taken only once <name><marker> exists")
    checksum: Literal["if_present", "required", "off"] = Field(
        "if_present", description="verify <name>.sha256 when the partner sends one (or demand it)"
    )
    max_file_bytes: int = Field(2 * 1024**3, description="refuse any single file larger than this")
    move_to_processed: bool = Field(False, description="after landing, move files and markers aside")
    processed_folder: str = Field("processed", description="subfolder of `folder` for taken files")
    timeout_s: float = Field(30.0, description="connect, authentication and read timeout")
    attempts: int = Field(5, ge=1, description="tries per operation when the connection drops")
    retry_wait_s: float = Field(1.0, description="first backoff pause; doubles per attempt (max 30 s)")
    request_bytes: int = Field(
        261_120, description="bytes per SFTP read request (255 KiB, OpenSSH's largest)"
    )
    max_requests: int | None = Field(None, description="cap on outstanding read requests (None: no cap)")
    wait: DropWait | None = Field(
        None, description="wait for a late file up to a deadline (else fail at once)"
    )


SourceConfig = Annotated[SqlSource | FolderSource | RestSource | SftpSource, Field(discriminator="transport")]


class Gates(BaseModel):
    """Batch gates: a batch outside these bounds is held and the master stays on the last good batch."""

    max_invalid_ratio: float = Field(0.2, description="share of quarantined rows above which a batch is held")
    max_volume_change: float = Field(
        0.3,
        description="change of accepted rows against the source's last accepted batch above which it is held",
    )
    max_event_rise: float = Field(
        0.5,
        description="relative rise of deaths or cancellations against the last accepted batch that holds a batch",
    )
    event_rise_floor: int = Field(
        20, ge=0, description="absolute rise always tolerated, so a handful of events cannot trip the gate"
    )
    max_type_mismatch: float = Field(
        0.5,
        description="share of a column's non-empty values that fail its contracted type above which the "
        "column changed type (schema drift) and the batch is held",
    )
    type_mismatch_min_values: int = Field(
        20, ge=1, description="a column is judged for a type change only with at least this many values"
    )
    # Change feeds (SQL incremental, REST changes): a delta batch holds only what changed, so it is judged
    # against the source's usual daily rate instead of its last batch.
    usual_daily: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="per source, the usual changes per day of a delta batch: 'rows' (accepted rows) and each "
        "event kind (e.g. deaths); what is not configured is learned from the source's accepted deltas",
    )
    delta_history: int = Field(10, ge=1, description="learn the usual daily rate from this many last deltas")
    delta_min_history: int = Field(
        3, ge=1, description="accepted delta batches needed before a learned rate is trusted"
    )
    delta_max_multiple: float = Field(
        5.0,
        gt=0,
        description="a delta above this multiple of the usual rate x days covered (+ floor) is held",
    )
    delta_rows_floor: int = Field(
        200, ge=0, description="accepted rows a delta batch may always carry (events use event_rise_floor)"
    )
    delta_max_share: float = Field(
        0.05,
        gt=0,
        description="without a usual rate: a delta whose rows or events exceed this share of the source's last "
        "full batch (+ floor) is held",
    )


class Guard(BaseModel):
    """Mass-change guard: a service whose decisions change for too many persons in one run has its
    outbound files held until `hub approve RUN --by NAME --reason TEXT` (a first run is exempt)."""

    max_changed_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="share of a service's persons whose eligibility or amount changed above which its "
        "outbound files are held",
    )


class Settings(BaseModel):
    region: str
    gates: Gates = Field(default_factory=lambda: Gates())
    guard: Guard = Field(default_factory=lambda: Guard())
    precedence: dict[str, list[str]] = Field(
        default_factory=dict,
        description="一数一源: attribute -> sources in order (first non-null wins); defaults in the master schema",
    )
    master_schema: str = Field(
        "schemas/master.yaml",
        description="the master file's schema: its attributes, the departments that feed it and who may say what",
    )
    county_codes_added: list[Annotated[str, Field(pattern=r"^[0-9]{6}$")]] = Field(
        default_factory=list,
        description="county codes newer than python-stdnum's table; an ID with none of the known codes is a warning",
    )
    policy: str
    master_url: str
    sources: dict[str, SourceConfig]
    audit: dict[str, Any] = Field(
        default_factory=dict, description="三查 audit rules; validated by stages.audit.AuditConfig"
    )
    var_dir: Path = Field(default_factory=lambda: Path("var"))
    config_file: Path | None = Field(
        None, exclude=True, description="the file these settings came from (DAG tasks reload it)"
    )
    partitions: Literal["none", "prefecture"] = Field(
        "none",
        description="the cycle's merge and eligibility in one task (none) or one mapped task per prefecture "
        "of the ID's address code, planned and reduced around them (stages/partitions.py)",
    )
    file_mode_group: bool = Field(
        False,
        description="files and folders holding personal data are 0600 / 0700; true: 0640 / 0750 (the group reads)",
    )

    @property
    def merged_sources(self) -> tuple[str, ...]:
        """The departments that feed the master file, in config order: `merge: true`, or named in the precedence."""
        from core.precedence import resolve_precedence

        named = {
            s for order in resolve_precedence(self.precedence, schema=self.master()).values() for s in order
        }
        return tuple(
            name
            for name, source in self.sources.items()
            if source.merge or (source.merge is None and name in named)
        )

    def master(self) -> MasterSchema:
        """The configured master schema (schemas/master.yaml unless the config names another)."""
        from core.master_schema import schema_at

        return schema_at(self.path(self.master_schema))

    def expand(self, text: str) -> str:
        """Fill `{var}` and `${ENV}` in a configured path or URL (secrets stay in the environment)."""
        return os.path.expandvars(text.replace("{var}", str(self.var_dir)))

    def path(self, relative: str) -> Path:
        """A repository file named in the config (contract, policy), resolved from the checkout."""
        p = Path(relative)
        return p if p.is_absolute() else ROOT / p


def load_settings(
    config: str | os.PathLike[str] | None = None, var_dir: str | os.PathLike[str] | None = None
) -> Settings:
    """Read and validate the config; environment variables override the defaults."""
    config_path = Path(config or os.environ.get("LIANBAN_CONFIG") or ROOT / "config" / "sandbox.yaml")
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SystemExit(f"config file {config_path} not found (set LIANBAN_CONFIG)") from exc
    var = Path(var_dir or os.environ.get("LIANBAN_VAR") or DEFAULT_VAR).resolve()
    from core.config_errors import explain

    try:
        settings = Settings(**raw, var_dir=var, config_file=config_path.resolve())
    except (ValidationError, TypeError) as exc:
        raise SystemExit(explain(config_path, exc)) from None
    from core.master_schema import MasterSchemaError

    try:
        settings.master()
    except MasterSchemaError as exc:
        raise SystemExit(f"{config_path}: master_schema: {exc}") from None
    _check_precedence(settings, config_path)
    _check_merged(settings, config_path)
    return settings


def _check_merged(settings: Settings, config_path: Path) -> None:
    """A source marked `merge: true` must be one the merge can read (a department of the master schema,
    which says what it carries); say so at load time rather than when the cycle's merge starts."""
    from core.precedence import PrecedenceError

    sources = settings.master().sources
    unknown = [s for s in settings.merged_sources if s not in sources]
    if unknown:
        raise PrecedenceError(
            f"{config_path}: sources.{unknown[0]}.merge: the merge reads only {list(sources)}, the "
            f"departments of the master schema {settings.master_schema}; declare the department there "
            "(its attributes' carriers) to merge it"
        )


def _check_precedence(settings: Settings, config_path: Path) -> None:
    """A bad 一数一源 list fails here, naming the config file and line, not later inside the merge."""
    from core.precedence import resolve_precedence

    lines: dict[str, int] = {}
    root = yaml.compose(config_path.read_text(encoding="utf-8"))
    for key, value in root.value if isinstance(root, yaml.MappingNode) else []:
        if key.value == "precedence" and isinstance(value, yaml.MappingNode):
            lines = {k.value: k.start_mark.line + 1 for k, _ in value.value}
    resolve_precedence(settings.precedence, str(config_path), lines, settings.master())

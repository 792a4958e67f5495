"""Every setting of the service, in one pydantic-settings model read from the environment.

Each field is one environment variable (its name upper-cased, or the alias it gives), with
one default and a description; docs/serving.md's settings table is `markdown_table()`'s
output (`python -m serving.settings` prints it, and a test keeps the two equal). The
image limits' defaults are the image contract's (`contracts.imaging.DEFAULT_LIMITS`), the
drift sample floor's the core's (`contracts.drift.MIN_SAMPLES`): the core reads no
environment, the service passes these values down.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasGenerator, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from contracts import drift
from contracts.imaging import DEFAULT_LIMITS, Limits


def available_cpus() -> int:
    """CPUs this process may really use: the affinity mask capped by a cgroup CPU quota.

    os.cpu_count() reports the host's cores, which oversubscribes a container limited to
    two CPUs and makes ONNX Runtime's threads fight each other.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def _shown(text: str) -> dict[str, Any]:
    """How docs/serving.md shows a default that depends on the machine."""
    return {"shown_default": text}


_CLIENT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_503 = "; beyond it: 503 with `Retry-After`"
_STORE_PATH = Path(tempfile.gettempdir()) / "cats-dogs-serving" / "store.sqlite3"


class Settings(BaseSettings):
    """All runtime settings of the service; `Settings()` reads them from the environment.

    An empty variable counts as unset (`API_KEY=` is no key: the start is refused unless
    `AUTH_DISABLED=true`, serving/auth_policy.py); one that does not parse (`PORT=abc`) stops the start with a message naming it.
    """

    model_config = SettingsConfigDict(
        alias_generator=AliasGenerator(validation_alias=str.upper),
        validate_by_name=True,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
    )

    # -- where the model is, and the process
    model_dir: Path = Field(
        Path("models/export"), description="folder with `model.onnx` and `model.json`"
    )
    host: str = Field("0.0.0.0", description="address `python -m serving` binds")
    port: int = Field(8000, ge=0, le=65535, description="port `python -m serving` binds")
    workers: int = Field(
        1,
        ge=1,
        description="uvicorn worker processes sharing the port (each loads the bundle: memory × `WORKERS`)",
    )
    log_level: str = Field(
        "info",
        pattern="^(debug|info|warning|error|critical)$",
        description="`debug`, `info`, `warning`, `error`",
    )
    api_key: str = Field(
        "",
        json_schema_extra=_shown("empty (the start is refused)"),
        description="required as `X-API-Key: KEY` or `Authorization: Bearer KEY` on every endpoint except health, metrics, the web page and the API docs; without it the service refuses to start unless `AUTH_DISABLED=true`",
    )
    auth_disabled: bool = Field(
        False,
        description="`true` lets the service start without `API_KEY`, every endpoint open (local use only; logged as a WARNING at start-up); ignored when `API_KEY` is set",
    )
    api_keys: str = Field(
        "",
        json_schema_extra=_shown("empty"),
        description="several clients' keys as `name:key,name:key` (names: letters, digits, `_-`, at most 32 chars); each is accepted like `API_KEY` (whose client name is `default`), and the name is recorded with each prediction, counted in `model_live_accuracy_by_client` and used for rate limits",
    )
    feedback_secret: str = Field(
        "",
        json_schema_extra=_shown("empty (random per process)"),
        description="secret of the `feedback_token` HMAC; replicas must share it: when empty each process draws its own (logged), and feedback only works on the process that answered",
    )
    api_docs: str = Field(
        "key",
        pattern="^(open|key|off)$",
        description="`/docs`, `/redoc`, `/openapi.json`: `open` (no key), `key` (behind the API key when one is set) or `off` (not served)",
    )
    shutdown_grace_s: float = Field(
        20.0,
        gt=0,
        description="how long `python -m serving` waits for in-flight requests after SIGTERM",
    )
    # -- what one request may bring (the image contract's limits and their defaults)
    max_bytes: int = Field(
        DEFAULT_LIMITS.max_bytes,
        ge=1,
        validation_alias="MAX_IMAGE_BYTES",
        description="largest image file",
    )
    max_pixels: int = Field(
        DEFAULT_LIMITS.max_pixels,
        ge=1,
        validation_alias="MAX_IMAGE_PIXELS",
        description="largest width × height (decompression bombs)",
    )
    max_decoded_bytes: int = Field(
        DEFAULT_LIMITS.max_decoded_bytes,
        ge=1,
        description="largest memory decoding one image may take, estimated from its header (see Limits)",
    )
    min_side: int = Field(
        DEFAULT_LIMITS.min_side,
        ge=1,
        validation_alias="MIN_IMAGE_SIDE",
        description="smallest accepted side in pixels",
    )
    allowed_formats: Annotated[frozenset[str], NoDecode] = Field(
        DEFAULT_LIMITS.formats, description="image formats accepted (comma list, Pillow names)"
    )
    max_request_bytes: int = Field(
        16 * 2**20,
        ge=1,
        description="body cap of `/predict/batch` and `/v2/...` (one-image routes are capped at 4/3 × `MAX_IMAGE_BYTES` + 64 KiB, room for base64)",
    )
    max_batch_files: int = Field(
        32,
        ge=1,
        description="most images in one request: `/predict/batch` files, V2 BYTES items, V2 FP32 `N`",
    )
    request_timeout_s: float = Field(
        10.0, gt=0, description="deadline from request start to prediction; past it: 504"
    )
    body_read_timeout_s: float = Field(
        10.0,
        gt=0,
        description="the whole body must arrive within this many seconds of the request's start; past it: 408",
    )
    v2_max_json_bytes: int = Field(
        8 * 2**20,
        ge=1,
        description="cap of a V2 body's JSON part (the JSON body, or the JSON before its binary tensor data), below `MAX_REQUEST_BYTES`: JSON costs many times its size once parsed",
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="request line and headers of one request, at most (h11's `max_incomplete_event_size`); more: 400 and the connection is closed",
    )
    header_read_timeout_s: float = Field(
        5.0,
        gt=0,
        description="a connection's request line and headers must arrive within this many seconds of its start (or of its previous answer); past it the connection is closed",
    )
    first_byte_timeout_s: float = Field(
        2.0,
        gt=0,
        description="a request with a body must send its first body bytes within this many seconds; past it: 408 (the body-memory budget is charged as bytes arrive, so idle connections hold none of it)",
    )
    explain_grid: int = Field(
        7,
        ge=2,
        description="occlusion grid of `/explain` (`7` → 49 variants + the original, run in chunks of `BATCH_MAX_SIZE`)",
    )
    # -- how much work the process takes on at once
    max_concurrent_requests: int = Field(
        64, ge=1, description="requests handled at once (probes, metrics, docs not counted)" + _503
    )
    max_body_memory_bytes: int = Field(
        96 * 2**20,
        ge=1,
        description="memory the request bodies in flight may take once read and parsed (estimated before reading: the declared length, × 4 for JSON, which every V2 body is but for its binary tensor data)"
        + _503
        + " (a request alone is always let in)",
    )
    explain_max_concurrent: int = Field(
        1,
        ge=1,
        description="`/explain` requests (about 50 inferences each) running at once" + _503,
    )
    rate_limit: str = Field(
        "100/second",
        description="requests one client (API key name, else client address) may send to the capped endpoints, as `limits` strings (`100/second;2000/minute`); `off`: none; past it: 429 with `Retry-After`",
    )
    rate_limit_storage: str = Field(
        "memory://",
        description="`limits` storage URI: `memory://` counts per process; `redis://host:6379` shares the counts between replicas (needs the `redis` package, not in the image)",
    )
    decode_queue_max: int = Field(
        64, ge=1, description="uploads decoding or waiting to be decoded" + _503
    )
    queue_max: int = Field(256, ge=1, description="images waiting for inference" + _503)
    retry_after_s: int = Field(1, ge=0, description="the `Retry-After` value sent with every 503")
    # -- speed
    inference_workers: int = Field(
        default_factory=available_cpus,
        ge=1,
        json_schema_extra=_shown("CPUs the container may use"),
        description="inference threads, each running one micro-batch at a time on the one ONNX Runtime session (the affinity mask, capped by the cgroup CPU quota)",
    )
    inference_threads: int = Field(
        1,
        ge=1,
        description="ONNX Runtime intra-op threads per batch; `1`: each worker runs the graph on one core, without intra-op synchronisation",
    )
    decode_threads: int = Field(
        default_factory=available_cpus,
        ge=1,
        json_schema_extra=_shown("same"),
        description="threads that decode images off the event loop",
    )
    batch_max_size: int = Field(
        4,
        ge=1,
        description="most images in one ONNX Runtime call (micro-batching; `1` turns it off); larger jobs run in chunks of this size",
    )
    batch_max_wait_ms: float = Field(
        0.0,
        ge=0,
        description="how long a batch may wait for more requests; `0` = take whatever queued while the previous batch ran",
    )
    draft_decode: bool = Field(
        True,
        description="decode large JPEGs at a reduced scale (Pillow draft mode), never below the model input size",
    )
    # -- the store of predictions and feedback (serving/store/, docs/monitoring.md)
    database_url: str = Field(
        "",
        pattern=r"^$|^postgres(ql)?://",
        json_schema_extra=_shown("unset"),
        description="`postgresql://user:pass@host:port/db`: the store of predictions and feedback that all replicas share; unset: SQLite at `STORE_PATH`",
    )
    store_path: Path = Field(
        _STORE_PATH,
        json_schema_extra=_shown("`$TMPDIR/cats-dogs-serving/store.sqlite3`"),
        description="the SQLite store, used when `DATABASE_URL` is unset (one machine; WAL mode, so several processes on that machine may share it)",
    )
    store_max_mb: float = Field(
        0.0,
        ge=0,
        description="SQLite size cap (`0`: none); past it the store is *full* (as a full disk)",
    )
    store_retention_days: float = Field(
        30.0,
        ge=0,
        description="predictions (and their feedback) older than this are deleted (`0`: kept forever)",
    )
    store_max_rows: int = Field(
        1_000_000,
        ge=0,
        description="newest predictions kept at most; older ones are deleted with their feedback (`0`: no cap)",
    )
    store_prune_interval_s: float = Field(
        300.0, gt=0, description="how often the writer deletes what retention no longer keeps"
    )
    store_batch_size: int = Field(
        64, ge=1, description="predictions written per transaction at most"
    )
    store_flush_ms: float = Field(
        200.0,
        gt=0,
        description="a queued prediction is written within this time (or as soon as a batch is full)",
    )
    store_queue_max: int = Field(
        10_000,
        ge=1,
        description="predictions waiting to be written, at most; more are dropped and counted",
    )
    store_retry_s: float = Field(
        5.0, gt=0, description="how long a failed batch is retried before it is dropped and counted"
    )
    store_timeout_s: float = Field(
        3.0,
        gt=0,
        description="connection and statement timeout (seconds); also the longest wait for a free connection",
    )
    store_pool_size: int = Field(
        4,
        ge=1,
        description="database connections per process at most (the writer's included): 8 replicas use at most 32 of PostgreSQL's default 100",
    )
    store_feedback_wait_s: float = Field(
        2.0,
        gt=0,
        description="how long `/feedback` waits for its prediction to be written when it is still queued",
    )
    # -- the live gauges (`model_drift_psi`, `model_live_accuracy`, `model_estimated_accuracy`,
    # `model_ood_flagged_share` on /metrics)
    recent_window: int = Field(
        1000,
        ge=1,
        description="predictions (and feedback answers) of all replicas behind the live gauges",
    )
    window_client_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="largest share of the live window one client's predictions may fill (its newest ones), so no client steers the drift gauges alone; applies with two or more API keys",
    )
    store_window_ttl_s: float = Field(
        5.0, ge=0, description="the gauges' window is read from the store at most this often"
    )
    drift_min_samples: int = Field(
        drift.MIN_SAMPLES,
        ge=1,
        description="fewest predictions in the window for a `model_drift_psi`, `model_estimated_accuracy` or `model_ood_flagged_share` figure (sampling noise alone gives a PSI near (bins − 1) / n; see monitoring.md)",
    )

    # -- shadow scoring (serving/inference/shadow.py, docs/serving.md)
    challenger_model_dir: Path | None = Field(
        None,
        json_schema_extra=_shown("unset (off)"),
        description="a second bundle scored in the shadow of the served one, off the request path; it must take the same input size and classes, or the service stays not ready saying why",
    )
    shadow_share: float = Field(
        1.0, ge=0, le=1, description="share of served photos the challenger also scores"
    )
    shadow_queue_max: int = Field(
        64,
        ge=1,
        description="photos waiting for the challenger, at most; more are dropped and counted (`shadow_dropped_total`), never waited for",
    )
    shadow_threads: int = Field(
        1, ge=1, description="ONNX Runtime threads of the challenger (its thread runs it)"
    )
    shadow_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="how much lower the challenger's thread runs than serving (Linux niceness added)",
    )

    @field_validator("allowed_formats", mode="before")
    @classmethod
    def _format_list(cls, value: object) -> object:
        """`ALLOWED_FORMATS=jpeg, png` as {"JPEG", "PNG"}."""
        if isinstance(value, str):
            return frozenset(f.strip().upper() for f in value.split(",") if f.strip())
        return value

    @model_validator(mode="after")
    def _keys_parse(self) -> Settings:
        """A malformed `API_KEYS` stops the start, naming the entry."""
        _ = self.clients
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from the environment; keyword overrides win."""
        return cls(**overrides)

    @classmethod
    def hermetic(cls, **values: object) -> Settings:
        """Settings from `values` and the defaults alone, never the environment (tests)."""
        return _Hermetic(**values)

    @property
    def image_limits(self) -> Limits:
        """What one photo may be, as the image contract checks it."""
        return Limits(
            max_bytes=self.max_bytes,
            max_pixels=self.max_pixels,
            max_decoded_bytes=self.max_decoded_bytes,
            min_side=self.min_side,
            formats=self.allowed_formats,
        )

    @property
    def clients(self) -> dict[str, str]:
        """Client name -> API key: `API_KEY` as `default`, then `API_KEYS`' pairs."""
        found = {"default": self.api_key} if self.api_key else {}
        for pair in filter(None, (p.strip() for p in self.api_keys.split(","))):
            name, sep, key = pair.partition(":")
            if not sep or not key or not _CLIENT_NAME.match(name) or name in found:
                raise ValueError(f"API_KEYS entry {name!r}: use unique name:key pairs")
            found[name] = key
        return found

    @property
    def single_image_body_limit(self) -> int:
        """Body cap for one-image routes: the image, base64's 4/3 growth, and form overhead."""
        return self.max_bytes * 4 // 3 + 64 * 1024


class _Hermetic(Settings):
    """Settings whose only source is the values given (`Settings.hermetic`)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        **_: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def env_name(name: str, field: FieldInfo) -> str:
    """The environment variable of a setting."""
    alias = field.validation_alias
    return alias if isinstance(alias, str) else name.upper()


def shown_default(field: FieldInfo) -> str:
    """A default as docs/serving.md shows it."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])
    value = field.get_default(call_default_factory=True)
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, frozenset):
        text = ",".join(sorted(value))
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    mib = f" ({value // 2**20} MiB)" if isinstance(value, int) and value >= 2**20 and value % 2**20 == 0 else ""  # fmt: skip
    return f"`{text}`{mib}"


def markdown_table() -> str:
    """docs/serving.md's settings table: every variable, its default and its meaning."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        rows.append(f"| `{env_name(name, field)}` | {shown_default(field)} | {field.description} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")

"""SQLAlchemy 2.0 typed tables. Times are UNIX seconds (floats): portable across SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    """An account. `role` is admin, member or viewer; `password_hash` is an argon2 hash (NULL for an account that
    logs in only through the lab's OpenID Connect provider). Limits are NULL when unlimited; `share` weighs the
    user in fair-share dispatch (twice the share, twice the GPU time when everyone is waiting)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    share: Mapped[float] = mapped_column(Float, default=1.0)
    max_running: Mapped[int | None] = mapped_column(Integer)
    max_queued: Mapped[int | None] = mapped_column(Integer)
    gpu_hours_per_week: Mapped[float | None] = mapped_column(Float)


class ApiToken(Base):
    """A personal API token. The token is shown once; the database keeps a short prefix (to find it) and the
    SHA-256 digest of the whole token (compared in constant time)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class WebSession(Base):
    """A browser's login: the cookie holds a random token, the database its SHA-256 digest and when it expires."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)


class Pack(Base):
    """Runs of a sweep that one worker trains at once as one vectorised model (workers/packed.py). Members are
    ordinary runs (own status, metrics, checkpoints) whose `pack_id` names the pack."""

    __tablename__ = "packs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id", ondelete="SET NULL"), index=True)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(200))
    device: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id", ondelete="SET NULL"), index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # within its owner's queue: higher goes first
    queue: Mapped[str] = mapped_column(String(16), default="auto", index=True)  # the device it asked for
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # workers lost while training it
    resumed_from: Mapped[int] = mapped_column(Integer, default=0)  # the checkpoint's step this attempt began at
    pack_id: Mapped[int | None] = mapped_column(ForeignKey("packs.id", ondelete="SET NULL"), index=True)
    pack_size: Mapped[int | None] = mapped_column(Integer)  # how many runs its pack was made of


class RunEvent(Base):
    """One change of a run's status, with why (queued, running on W, lost at step S, handed back, finished)."""

    __tablename__ = "run_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    at: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    step: Mapped[int | None] = mapped_column(Integer)


class MetricChunk(Base):
    """One flush of one metric of one run: the steps it logged and their values as two little-endian arrays (int64
    steps, float64 values; NaN and ±inf kept as they are), so a flush of S steps × M metrics is M rows, not S × M.

    A step written again (a resumed run recomputing what its last attempt logged after its checkpoint) lands in a
    newer chunk; readers keep the newest value of each (run, metric, step), so it overwrites, never duplicates.
    When the run finishes its chunks are compacted into one per metric. `steps` is empty when the chunk holds every
    step from `first_step` to `last_step` (a per-step metric; store.py `_encode_steps`)."""

    __tablename__ = "metric_chunks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # write order: newest wins
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(64))
    first_step: Mapped[int] = mapped_column(Integer)
    last_step: Mapped[int] = mapped_column(Integer)
    steps: Mapped[bytes] = mapped_column(LargeBinary)
    values: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_metric_chunks_run_last", "run_id", "last_step"),)


class PackedCurve(Base):
    """A finished run's metric as two little-endian arrays (int64 steps, float64 values; NaN kept), written once
    when the run finishes. Derived from `metric_chunks`, which stay the source of truth; read by the Compare page."""

    __tablename__ = "curves"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    steps: Mapped[bytes] = mapped_column(LargeBinary)
    values: Mapped[bytes] = mapped_column(LargeBinary)


class Worker(Base):
    """A worker process as it last reported itself (every few seconds, from a thread beside the training).
    `drain` is set by an admin: the worker finishes its run and takes no more. A worker whose heartbeat is older
    than the timeout and that did not say it stopped is lost."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid, as on the runs it trains
    celery_name: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # cuda or cpu: the queues it consumes
    device: Mapped[str] = mapped_column(String(200))  # e.g. "NVIDIA H200, 139 GiB" or "CPU, 16 cores"
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))  # idle, training, stopped
    run_id: Mapped[int | None] = mapped_column(Integer)
    drain: Mapped[bool] = mapped_column(Boolean, default=False)
    stats: Mapped[dict] = mapped_column(JSON)  # cpu_percent, memory_percent, gpu_util, gpu_memory_used/total

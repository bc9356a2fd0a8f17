"""One settings object, read from the environment, shared by the UI, the CLI, the worker and the store."""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPTLAB_", extra="ignore", env_file=".env")

    database_url: str = Field(
        "sqlite:///data/optlab.db",
        validation_alias=AliasChoices("DATABASE_URL", "OPTLAB_DATABASE_URL"),
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "OPTLAB_REDIS_URL"),
    )
    max_steps: int = Field(100_000, ge=1, description="largest `steps` a run spec may ask for")
    heartbeat_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a running run whose worker has been silent this long is lost: it goes back to the queue and "
        "resumes from its last checkpoint",
    )
    max_attempts: int = Field(
        3, ge=1, description="a run that has lost its worker this many times is failed instead of requeued"
    )
    stall_s: float = Field(
        600.0,
        ge=0,
        description="a worker whose run hands over no metrics for this long (a step that never returns: a deadlocked "
        "data loader, a wedged GPU) stops heartbeating it, so it goes back to the queue as lost (0: never)",
    )
    checkpoint_dir: str = Field(
        "data/checkpoints",
        description="where workers keep each unfinished run's training state: a directory every worker can read "
        "(the shared volume), or a mounted object-store path",
    )
    checkpoint_steps: int = Field(500, ge=0, description="a worker checkpoints a run every this many steps ...")
    checkpoint_seconds: float = Field(30.0, ge=0, description="... or this many seconds, whichever first (0: never)")
    worker_report_s: float = Field(5.0, gt=0, description="a worker reports itself (Workers page) this often")
    flush_seconds: float = Field(0.5, gt=0, description="metrics reach the database at least this often")
    flush_steps: int = Field(200, ge=1, description="... or every this many steps, whichever comes first")
    pack_size: int = Field(
        32, ge=1, le=1024,
        description="a sweep's compatible runs train in packs of at most this many (1: never packed); a worker also "
        "takes no more members than half the memory it has free holds",
    )  # fmt: skip
    auth: bool = Field(
        False,
        description="require a login (local accounts, or the lab's OpenID Connect provider) for every page, "
        "download and API call; off, everyone acts as the one local admin",
    )
    session_hours: float = Field(12.0, gt=0, description="a login lasts this long")
    admin_user: str | None = Field(None, description="on first start with auth on: create this admin account")
    admin_password: str | None = Field(None, description="... with this password (then remove it from the env)")
    playground_draw_pause_s: float = Field(
        0.04,
        ge=0,
        le=1,
        description="the Playground pauses this long after sending a changed plot, so that the browser draws it "
        "before the ~100 unchanged elements below it arrive",
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()

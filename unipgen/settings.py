"""Settings, read from the environment (prefix ``UNIPGEN_``) when `Settings()` is built, never at import."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The searches that protect photos from fine-tuning (`unipgen.modalities.image_protect`).
ProtectMethod = Literal["misalign", "aspl"]


class Settings(BaseSettings):
    """Where unipgen keeps its data, and the limits it enforces on input.

    ``home`` holds the embedded default: the SQLite file, the faiss index files and the blob
    directory. Point ``database_url`` at PostgreSQL and ``blob_url`` at an fsspec URL (for
    example ``s3://bucket/prefix``) to scale out; the same code runs both.
    """

    model_config = SettingsConfigDict(env_prefix="UNIPGEN_", extra="ignore")

    home: Path = Field(default=Path(".unipgen"), description="Data directory.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file `unipgen.db` in `home`."
    )
    blob_url: str | None = Field(
        default=None, description="fsspec URL of the blob store; default: `home`/blobs."
    )
    index_dir: Path | None = Field(
        default=None, description="Directory of the persisted faiss indexes; default: `home`/indexes."
    )
    max_blob_bytes: int = Field(
        default=25 * 1024 * 1024, gt=0, description="Largest accepted upload (image, audio...)."
    )
    executor: Literal["inline", "ray"] = Field(
        default="inline", description="Who runs jobs: this process, or a Ray cluster."
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster to join (e.g. `10.0.0.5:6379`); default: start a local one."
    )
    max_queued_jobs: int = Field(
        default=1000, gt=0, description="Jobs a tenant may have queued or running; beyond, submit is refused."
    )

    admin_key: str | None = Field(
        default=None, description="Key of the service's admin routes (tenants, API keys); unset: admin routes refuse.",
    )
    rate_limit_per_minute: int = Field(
        default=600, gt=0, description="Requests one API key may make per minute (per service process, or "
                                       "across all of them with `redis_url`).",
    )
    redis_url: str | None = Field(
        default=None, description="Redis (`redis://host:6379/0`) where every service process counts the rate limit "
                                  "and failed logins, so that the limits hold across processes; unset: each "
                                  "process counts on its own.",
    )
    redis_prefix: str = Field(
        default="unipgen", min_length=1, description="Namespace of the service's keys in Redis (`<prefix>:rate:...`): "
                                                     "deployments sharing one Redis take different ones.",
    )
    max_audio_seconds: float = Field(
        default=120.0, gt=0, description="Longest voice sample accepted.",
    )
    retention_days: dict[str, float] = Field(
        default_factory=dict,
        description="Days each kind of data is kept (face, voice, document, event, output); `unipgen purge` "
                    "deletes older ones with what was derived from them. A kind not listed is kept.",
    )

    auth_failures_per_minute: int = Field(
        default=30, gt=0, description="Failed logins (unknown, malformed or revoked keys) one client address may "
                                      "make per minute; beyond, every request from it answers 429 until the "
                                      "minute has passed (per service process, or across all of them with "
                                      "`redis_url`).",
    )
    lease_s: float = Field(
        default=30.0, gt=0, description="Seconds a worker holds a job without a heartbeat; a dead worker's job is "
                                        "queued again after this long.",
    )
    heartbeat_s: float = Field(
        default=5.0, gt=0, description="Seconds between a running job's lease renewals (at most a third of "
                                       "`lease_s` is used).",
    )
    checkpoint_every: int = Field(
        default=10, gt=0, description="Training steps between a training job's checkpoints (a retried job "
                                      "resumes from the last one).",
    )
    refit_every_events: int = Field(
        default=10_000, ge=0, description="Refit policy of the behavior space: once a tenant that has a fit has this "
                                          "many new events, writing events queues a refit job (0: only on demand "
                                          "and after a forget, which always queues one).",
    )
    # -- input budgets (issue 14): every one checked before the expensive step it guards --------
    max_request_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest JSON request body of an ordinary route (bytes).",
    )
    max_bulk_request_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0,
        description="Largest request body of a bulk route (`/v1/events/bulk`, `/v1/items`, documents).",
    )
    max_document_chars: int = Field(
        default=100_000, gt=0, description="Longest document text accepted (characters).",
    )
    max_image_pixels: int = Field(
        default=40_000_000, gt=0, description="Most pixels (width x height, from the header) of an uploaded image.",
    )
    max_image_side: int = Field(
        default=12_000, gt=0, description="Longest side (pixels, from the header) of an uploaded image.",
    )
    max_image_aspect: float = Field(
        default=20.0, ge=1.0, description="Largest ratio of an uploaded image's longer side to its shorter side.",
    )
    encoder_image_side: int = Field(
        default=1024, gt=0,
        description="Images are reduced to at most this side before a face or image encoder sees them.",
    )
    max_audio_decoded_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0,
        description="Most bytes an uploaded recording may decode to (frames x channels x 4, from the header).",
    )
    encoder_workers: int = Field(
        default=1, ge=0,
        description="Child processes that run the service's encoders of uploaded files (face, voice, images), "
                    "restarted after a crash so that a native crash costs one request, not the service; "
                    "0 encodes in the service process.",
    )
    encoder_timeout_s: float = Field(
        default=60.0, gt=0,
        description="Longest an upload's encoding may take in the encoder process (the first upload also loads "
                    "the models); beyond, the process is killed and the request answers 503 `encoder_failed`.",
    )

    # -- protection of photos (Anti-DreamBooth / ASPL, docs/generation.md) ------------------------
    protect_epsilon: float = Field(
        default=4.0, gt=0, le=32, description="Most a protected photo's pixel may change, per channel, in 8-bit levels "
                                              "(4: PSNR of 36 dB or more against the original).",
    )
    protect_step_size: float = Field(
        default=1.0, gt=0, le=32, description="Step of the perturbation search, in 8-bit levels.",
    )
    protect_rounds: int = Field(
        default=10, ge=1, le=1000, description="ASPL rounds (surrogate on clean photos, perturbation steps, surrogate "
                                               "on protected photos); the paper runs 50.",
    )
    protect_pgd_steps: int = Field(default=6, ge=1, le=100, description="Perturbation steps per ASPL round.")
    protect_surrogate_steps: int = Field(
        default=3, ge=0, le=100, description="Surrogate fine-tuning steps per phase of an ASPL round.",
    )
    protect_method: ProtectMethod = Field(
        default="misalign", description="The perturbation search: `misalign` turns a fine-tune's gradient on the "
                                        "protected photos against the real ones (the one `bench protect` shows to "
                                        "work on the tiny model); `aspl`, the paper's, raises the surrogate's loss.",
    )

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'unipgen.db').as_posix()}"

    def resolved_blob_url(self) -> str:
        return self.blob_url or (self.home / "blobs").as_posix()

    def resolved_index_dir(self) -> Path:
        return self.index_dir or self.home / "indexes"

    def resolved_scratch_dir(self) -> Path:
        """Where running jobs keep what a retry needs (training checkpoints), one folder a job."""
        return self.home / "jobs"

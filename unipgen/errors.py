"""The one exception hierarchy of unipgen. Each class has a stable ``code`` (see docs/errors.md).

Errors a caller can fix (bad input, unknown ids) are apart from runtime failures. Every class
passes its message to ``Exception.__init__`` so that it pickles across processes (Ray).
"""

from __future__ import annotations


class UnipgenError(Exception):
    """Root of every error unipgen raises on purpose."""

    code = "unipgen_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(UnipgenError):
    """The input is malformed: a bad timestamp, an unknown event type, a wrong vector size."""

    code = "invalid_input"


class NotFoundError(UnipgenError):
    """A tenant, user or item named by the caller does not exist (in that tenant)."""

    code = "not_found"


class ConflictError(UnipgenError):
    """The write would duplicate an id that must be unique, or import into a non-empty place."""

    code = "conflict"


class UnsupportedMediaError(InvalidInputError):
    """A file is not of the kind required (an image that is not an image, audio that is not audio)."""

    code = "unsupported_media"


class PayloadTooLargeError(InvalidInputError):
    """A blob is over the configured size limit (`Settings.max_blob_bytes`)."""

    code = "payload_too_large"


class MissingDependencyError(UnipgenError):
    """An optional package a model needs is missing or too old; the message says what to install."""

    code = "missing_dependency"


class StoreError(UnipgenError):
    """A runtime failure of the store (not the caller's fault): I/O, a corrupt index file."""

    code = "store_error"


class QueueFullError(UnipgenError):
    """The job queue is at its limit (`Settings.max_queued_jobs`): retry later (HTTP 429)."""

    code = "queue_full"


class UnauthorizedError(UnipgenError):
    """No API key, an unknown or revoked one, or a tenant key on an admin route (HTTP 401)."""

    code = "unauthorized"


class RateLimitedError(UnipgenError):
    """Too many requests: an API key over `Settings.rate_limit_per_minute`, or a client address
    over `Settings.auth_failures_per_minute` failed logins (HTTP 429, `Retry-After` set from
    `retry_after_s`)."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float = 60.0) -> None:
        Exception.__init__(self, message, retry_after_s)  # both arguments: it pickles whole
        self.message = message
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return self.message



class ConsentRequiredError(UnipgenError):
    """The user has not given the consent this needs: an adapter trained on their faces or
    subjects needs their consent to training, apart from the consent to storing the photos
    (HTTP 403). Nothing was trained or stored."""

    code = "consent_required"


class EncoderFailedError(UnipgenError):
    """An encoder's process died on an upload (a native crash in a decoder or a model): the
    request is refused (HTTP 503), the file is not stored, and the next request gets a fresh
    encoder process. The message names the file."""

    code = "encoder_failed"


class UnavailableError(UnipgenError):
    """A service unipgen depends on cannot be reached: the shared rate-limit counter
    (`Settings.redis_url`). The request is refused (HTTP 503) rather than let through
    unchecked; the message names the setting. Retry later."""

    code = "unavailable"


def error_from(record: dict[str, str]) -> UnipgenError:
    """The error a recorded `{"code", "message"}` stands for (a failed job's, for example),
    as the class with that code, so that a caller sees the same error as if it ran here."""

    def subclasses(cls: type[UnipgenError]) -> list[type[UnipgenError]]:
        return [cls] + [sub for child in cls.__subclasses__() for sub in subclasses(child)]

    for cls in subclasses(UnipgenError):
        if cls.code == record.get("code"):
            return cls(record.get("message", ""))
    error = UnipgenError(record.get("message", ""))
    error.code = record.get("code", UnipgenError.code)
    return error

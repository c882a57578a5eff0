"""The typed error every virtbus reply may carry instead of a result.

A reply never carries a traceback: code, message, the field to blame, and whether a retry helps.
"""

from __future__ import annotations

import enum

import msgspec


class Code(enum.StrEnum):
    BAD_REQUEST = "BadRequest"  # not JSON, wrong shape, unknown field
    INVALID = "Invalid"  # well formed, but a value is not acceptable
    NOT_FOUND = "NotFound"
    ALREADY_EXISTS = "AlreadyExists"
    CONFLICT = "Conflict"  # lost a compare-and-set race: retry
    FORBIDDEN = "Forbidden"  # the caller may not do this (a node reporting on another node's VMI)
    UNAVAILABLE = "Unavailable"  # a dependency is down: retry later
    INTERNAL = "Internal"


_RETRYABLE = {Code.CONFLICT, Code.UNAVAILABLE}


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    code: Code
    message: str
    field: str | None = None
    retryable: bool = False


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True):
    error: ErrorBody


class ApiError(Exception):
    """Raised by request handlers for expected failures; turned into an ErrorReply."""

    def __init__(self, code: Code, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    @property
    def retryable(self) -> bool:
        return self.code in _RETRYABLE

    def body(self) -> ErrorBody:
        return ErrorBody(code=self.code, message=self.message, field=self.field, retryable=self.retryable)

    @classmethod
    def from_body(cls, body: ErrorBody) -> ApiError:
        return cls(body.code, body.message, body.field)

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"{self.code.value}{where}: {self.message}"

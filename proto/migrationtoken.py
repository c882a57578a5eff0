"""The key to a migration's target, given to its source node only (pure).

A migration's target launcher listens on its node's address (launcher.migrationproxy); each connection
must start with a token it made. That token is never written in the instance's record: every viewer
reads records. The source's launcher asks the target's for it over core NATS instead
(``subjects.migration_token``, which only the target node may subscribe to), and the target answers
only a request whose reply subject is the source node's own inbox. NATS lets no one but that node
subscribe there (proto.permissions), so whoever asks, only the source node hears the answer.
"""

from __future__ import annotations

from proto.api import Message
from proto.errors import ApiError, Code
from proto.subjects import inbox_prefix

TOKEN_HEX = 32  # 16 random bytes, as hex


class TokenRequest(Message, frozen=True):
    vmi: str
    migration_uid: str


class TokenGrant(Message, frozen=True):
    token: str
    certificate: str = ""  # the target's own, PEM (launcher.migrationtls); none when TLS is off


MAX_CERTIFICATE = 8192


def check_token(token: str) -> None:
    if len(token) != TOKEN_HEX or any(c not in "0123456789abcdef" for c in token):
        raise ApiError(Code.INVALID, f"the token is {TOKEN_HEX} lowercase hex digits", "token")


def check_grant(grant: TokenGrant, tls: bool) -> None:
    """What the source is given: a token, and a certificate in PEM exactly when the migration is over TLS."""
    check_token(grant.token)
    if not tls:
        return
    pem = grant.certificate
    if not pem or len(pem) > MAX_CERTIFICATE or not pem.startswith("-----BEGIN CERTIFICATE-----") \
            or not all(c.isprintable() or c == "\n" for c in pem):
        raise ApiError(Code.INVALID, "the target gave no certificate in PEM, and the migration is over TLS",
                       "certificate")


def answerable(reply: str, source_node: str) -> bool:
    """Whether the token may be sent to this reply subject: the source node's inbox, which only it reads."""
    return reply.startswith(inbox_prefix("node", source_node) + ".")


def refusal(request: TokenRequest, *, vmi: str, migration_uid: str, source_node: str | None,
            reply: str) -> ApiError | None:
    """Why this request gets no token (None: it gets it): another instance's, another migration's, or
    not asked from the source node's inbox."""
    if (request.vmi, request.migration_uid) != (vmi, migration_uid):
        return ApiError(Code.NOT_FOUND, f"no migration {request.migration_uid} of VMI {request.vmi} is received here")
    if source_node is None or not answerable(reply, source_node):
        return ApiError(Code.FORBIDDEN, "the token is given to the migration's source node only")
    return None

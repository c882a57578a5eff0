"""Who gets a migration's token (proto.migrationtoken): the source node's inbox only, of the migration
the target receives; and who may hear it asked or answered (proto.permissions)."""

from __future__ import annotations

import pytest

from proto import subjects
from proto.errors import ApiError, Code
from proto.migrationtoken import TokenGrant, TokenRequest, check_grant, check_token, refusal
from proto.permissions import Role, permissions
from tests.unit.test_permissions_rules import matches, may_publish

ASKED = TokenRequest(vmi="vm1", migration_uid="m-1")
SOURCE_INBOX = f"{subjects.inbox_prefix('node', 'node1')}.abc.1"


def why(request: TokenRequest = ASKED, *, source: str | None = "node1", reply: str = SOURCE_INBOX) -> ApiError | None:
    return refusal(request, vmi="vm1", migration_uid="m-1", source_node=source, reply=reply)


def test_the_source_nodes_inbox_gets_the_token() -> None:
    assert why() is None


@pytest.mark.parametrize("reply", [
    "_INBOX.abc",  # a person's tool (a viewer reads _INBOX.>)
    f"{subjects.inbox_prefix('node', 'node3')}.abc",  # another node
    f"{subjects.inbox_prefix('node', 'node1x')}.abc",  # a node whose name starts as the source's does
    subjects.inbox_prefix("node", "node1"),  # the prefix itself, no inbox under it
    f"{subjects.inbox_prefix('control')}.abc",
])
def test_any_other_reply_subject_gets_a_refusal(reply: str) -> None:
    refused = why(reply=reply)
    assert refused is not None and refused.code is Code.FORBIDDEN


def test_another_migration_or_instance_or_none_known_yet_is_refused() -> None:
    for request in (TokenRequest(vmi="vm2", migration_uid="m-1"), TokenRequest(vmi="vm1", migration_uid="m-2")):
        refused = why(request)
        assert refused is not None and refused.code is Code.NOT_FOUND
    refused = why(source=None)  # the target has not heard where the guest comes from
    assert refused is not None and refused.code is Code.FORBIDDEN


def test_a_grant_over_tls_carries_a_certificate_and_one_in_the_clear_need_not() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    check_grant(TokenGrant(token="ab" * 16, certificate=pem), tls=True)
    check_grant(TokenGrant(token="ab" * 16), tls=False)
    for bad in ("", "not a certificate", pem + "x" * 9000, pem.replace("MIIB", "MI\x00IB")):
        with pytest.raises(ApiError):
            check_grant(TokenGrant(token="ab" * 16, certificate=bad), tls=True)
    with pytest.raises(ApiError):
        check_grant(TokenGrant(token="nope", certificate=pem), tls=True)


def test_a_token_answered_is_hex_of_the_right_length() -> None:
    check_token("0123456789abcdef" * 2)
    for bad in ("0123456789ABCDEF" * 2, "ab", "zz" * 16, "0123456789abcdef" * 2 + "0"):
        with pytest.raises(ApiError):
            check_token(bad)


def test_only_the_target_node_hears_a_request_and_only_nodes_ask() -> None:
    asked = subjects.migration_token("node2", "m-1")
    node2 = permissions(Role.NODE, "node2").subscribe.allow
    assert any(matches(p, asked) for p in node2)
    for role, node in ((Role.NODE, "node1"), (Role.NODE, "node3"), (Role.VIEWER, None), (Role.CONTROL, None)):
        assert not any(matches(p, asked) for p in permissions(role, node).subscribe.allow), (role, node)
    assert may_publish(Role.NODE, asked, "node1")  # the source asks
    assert not may_publish(Role.VIEWER, asked)
    # the answer goes to the source's inbox: no one else may subscribe there
    for role, node in ((Role.NODE, "node3"), (Role.VIEWER, None), (Role.CONTROL, None)):
        assert not any(matches(p, SOURCE_INBOX) for p in permissions(role, node).subscribe.allow), (role, node)

"""Fixtures of the unit tests (which open no sockets)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, cast

import pytest
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from servicekit.store import Store


@pytest.fixture
def offline_store() -> Store:
    """A Store with no connection behind it, for the parts of the handler that only touch the node's
    network (routes, bridges, addresses): any bucket read would fail on the missing KeyValue."""
    kvs: defaultdict[str, KeyValue] = defaultdict(lambda: cast(KeyValue, None))
    return Store(cast(Any, None), cast(JetStreamContext, None), kvs, cast(ObjectStore, None), cast(ObjectStore, None))

"""How many consumers each stream of virtbus allows (its KV buckets', object stores' and streams').

nats-server 2.15 caps every stream at 1,000 consumers unless the stream's config names a limit of its
own: 0 and -1 both read as that default, and nats-py makes KV and object store streams with -1. Every
node watched the ``nodes`` bucket and its own node's copies in its ``nodevmis`` shard, every launcher its
own VMI in ``vmis``: at a thousand nodes (or a thousand VMIs) the next watch was refused with 10026
"maximum consumers limit reached", and retried once a second until someone else's consumer went.
So the control plane gives each stream a limit of its own as it makes it, and raises the limit of a
stream made before (by an older virtbus, or by nats-py's defaults) as it opens it.
"""

from __future__ import annotations

import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import StreamInfo

log = structlog.get_logger()

# Room for the targets of a thousand nodes and ten thousand VMIs ten times over, had each VMI's
# launcher kept a consumer of ``vmis`` as it did before launcher.ownvmi (now the watches that remain
# are the control plane's and short reads); still a bound, so a client that leaks consumers meets it.
MAX_CONSUMERS = 100_000


def names_no_limit(max_consumers: int | None) -> bool:
    """Whether a stream with this ``max_consumers`` leaves the limit to the server's default (pure):
    None (not reported), 0 or -1. A limit a stream names itself (an operator's) is kept."""
    return max_consumers is None or max_consumers <= 0


async def allow_consumers(js: JetStreamContext, info: StreamInfo, limit: int = MAX_CONSUMERS) -> StreamInfo:
    """The stream given ``limit`` when it names none; its info as it is then. A server that will not
    change it is logged and left: an older nats-server (Debian's 2.9) cannot change a stream's limit,
    and has no default cap to lift either."""
    if not names_no_limit(info.config.max_consumers):
        return info
    try:
        updated = await js.update_stream(info.config, max_consumers=limit)
    except nats.js.errors.APIError as exc:
        log.warning("stream consumer limit not raised", stream=info.config.name, limit=limit,
                    error=exc.description or str(exc))
        return info
    log.info("stream consumer limit raised", stream=info.config.name, limit=limit,
             was=info.config.max_consumers)
    return updated

"""raftctl: the command-line tool and Python client library of a rafty cluster.

```python
from raftctl import Client
with Client(["127.0.0.1:7001", "127.0.0.1:7002"], timeout=5.0) as c:
    c.set("k", "v"); c.get("k"); c.delete("k")
```
"""

from raftctl.client import AsyncClient, Client, Page
from raftctl.errors import (
    BadRequest,
    ClusterUnavailable,
    ConditionFailed,
    InvalidEndpoint,
    NoLeader,
    RaftctlError,
    RequestTimeout,
    ServerError,
    SessionExpired,
    TooLarge,
)

# DistributedDict and the refresh policies (RefreshPolicyAlways, RefreshPolicyLock,
# RefreshPolicyCount, RefreshPolicyTime) are re-exported here from raftctl.ddict once it exists.

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClusterUnavailable",
    "ConditionFailed",
    "InvalidEndpoint",
    "NoLeader",
    "Page",
    "RaftctlError",
    "RequestTimeout",
    "ServerError",
    "SessionExpired",
    "TooLarge",
]

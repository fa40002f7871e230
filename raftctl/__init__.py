"""raftctl: the command-line tool and Python client library of a rafty cluster.

```python
from raftctl import Client
with Client(["127.0.0.1:7001", "127.0.0.1:7002"], timeout=5.0) as c:
    c.set("k", "v"); c.get("k"); c.delete("k")
```
"""

from raftctl.blocking import Client
from raftctl.client import AsyncClient, Item, Page
from raftctl.ddict import (
    DistributedDict,
    RefreshPolicy,
    RefreshPolicyAlways,
    RefreshPolicyCount,
    RefreshPolicyLock,
    RefreshPolicyTime,
)
from raftctl.errors import (
    BadRequest,
    ClusterUnavailable,
    ConditionFailed,
    InvalidArgument,
    InvalidEndpoint,
    NoLeader,
    RaftctlError,
    RequestTimeout,
    ServerError,
    SessionExpired,
    TooLarge,
    Unauthorized,
)

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClusterUnavailable",
    "ConditionFailed",
    "DistributedDict",
    "InvalidArgument",
    "InvalidEndpoint",
    "Item",
    "NoLeader",
    "Page",
    "RaftctlError",
    "RefreshPolicy",
    "RefreshPolicyAlways",
    "RefreshPolicyCount",
    "RefreshPolicyLock",
    "RefreshPolicyTime",
    "RequestTimeout",
    "ServerError",
    "SessionExpired",
    "TooLarge",
    "Unauthorized",
]

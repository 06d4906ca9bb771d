"""The embedded Query/Retrieve SCP's storage side: an index of instances and its query engine.

Nothing here touches the network: the C-FIND, C-MOVE and C-GET handlers call
:func:`~aiodicom.server.query.find` and :func:`~aiodicom.server.query.instances_for_retrieve`
on an :class:`~aiodicom.server.index.InstanceIndex`, one bounded batch at a time, so that the
event loop they share with everything else stays responsive.
"""

from aiodicom.server.index import IndexedFileChanged, InstanceIndex, ScanProgress, StoredInstance
from aiodicom.server.query import (
    HierarchyError,
    IdentifierError,
    QueryRefused,
    count_for_retrieve,
    find,
    instances_for_retrieve,
)
from aiodicom.server.steps import run_scan, stepwise

__all__ = [
    "HierarchyError",
    "IdentifierError",
    "IndexedFileChanged",
    "InstanceIndex",
    "QueryRefused",
    "ScanProgress",
    "StoredInstance",
    "count_for_retrieve",
    "find",
    "instances_for_retrieve",
    "run_scan",
    "stepwise",
]

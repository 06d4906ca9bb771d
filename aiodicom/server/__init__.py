"""The embedded Query/Retrieve SCP: :class:`QRServer` (``server.scp``) serves an index of
instances and its query engine over the network.

The index and the engine touch no network. The handlers on the acceptor
(``server.operations``) use them so::

    index = InstanceIndex(directory)          # or InstanceIndex() in memory
    await run_scan(index)                     # at start-up, bounded steps

    # C-STORE (storage SCP): index.store(instance) -> StoredInstance
    #   (writes the Part 10 file atomically in directory mode; MalformedDataSetError,
    #   sinks.InvalidUIDError -> a failure status)

    # C-FIND: validation raises before any response
    try:
        batches = find(index, identifier, model, retrieve_ae_title=our_ae_title)
    except QueryRefused as exc:
        ... send the final response with exc.status (0xA900 or 0xC000), exc as comment
    async for batch in stepwise(batches):     # a checkpoint between batches
        for response in batch:
            ... send Pending (0xFF00) with response; stop on C-CANCEL (0xFE00)
    ... send Success

    # C-MOVE / C-GET
    total = count_for_retrieve(index, identifier, model)   # QueryRefused as above
    pairs = syntaxes_for_retrieve(index, identifier, model)  # C-MOVE: contexts to propose
    async for batch in stepwise(instances_for_retrieve(index, identifier, model)):
        for stored in batch:
            data = index.read_data(stored)    # the data set bytes as stored, in
            ...                               # stored.transfer_syntax_uid: C-STORE them
                                              # (IndexedFileChanged/FileNotFoundError:
                                              # a failed sub-operation)

Every call is synchronous and bounded: one instance stored, one scan step, one batch.
"""

from aiodicom.server.commitment import CommitmentOptions
from aiodicom.server.index import IndexedFileChanged, InstanceIndex, ScanProgress, StoredInstance
from aiodicom.server.query import (
    HierarchyError,
    IdentifierError,
    QueryRefused,
    count_for_retrieve,
    find,
    instances_for_retrieve,
    syntaxes_for_retrieve,
)
from aiodicom.server.scp import IndexSink, QRServer
from aiodicom.server.steps import run_scan, stepwise

__all__ = [
    "CommitmentOptions",
    "HierarchyError",
    "IdentifierError",
    "IndexSink",
    "IndexedFileChanged",
    "InstanceIndex",
    "QRServer",
    "QueryRefused",
    "ScanProgress",
    "StoredInstance",
    "count_for_retrieve",
    "find",
    "instances_for_retrieve",
    "run_scan",
    "stepwise",
    "syntaxes_for_retrieve",
]

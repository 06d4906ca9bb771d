"""aiodicom: an asyncio-native DICOM Query/Retrieve client with an embedded Storage SCP."""

from aiodicom.access import AccessPolicy, IdentityType, UserIdentity
from aiodicom.association import Timeouts
from aiodicom.client import Client, Peer, PeerAddress
from aiodicom.errors import (
    AssociationAborted,
    AssociationError,
    AssociationRejected,
    ConnectionClosed,
    DicomError,
    DicomTimeoutError,
    DimseError,
    LocalProtocolError,
    NoAcceptedContext,
    PDUDecodeError,
    QueryError,
    StatusError,
    UnsupportedBackend,
)
from aiodicom.instance import Instance
from aiodicom.limits import Limits
from aiodicom.model import Level, QueryModel
from aiodicom.negotiation import ContextProposal, PresentationContext
from aiodicom.pool import AssociationPool, PoolOptions, PoolTimeout
from aiodicom.query import Query
from aiodicom.series import Series
from aiodicom.services.commitment import StoredAndCommitted
from aiodicom.services.commitment_registry import (
    CommitmentJournal,
    CommitmentRegistry,
    CommitmentResult,
    CommitmentTimeout,
    FailedInstance,
    FailureReason,
    PendingCommitment,
    ReferencedInstance,
)
from aiodicom.services.find import (
    Find,
    FindError,
    FindOptions,
    FindResult,
    HierarchicalFind,
    HierarchyResult,
)
from aiodicom.services.retrieve import (
    InstanceArrived,
    MoveDestinationUnknown,
    Progress,
    Retrieval,
    RetrieveError,
    RetrieveResult,
)
from aiodicom.services.series_selection import (
    CandidateSeries,
    CheckedBy,
    KeyCheck,
    SeriesSelection,
)
from aiodicom.services.store import StoreOutcome, StoreResult
from aiodicom.session import Session
from aiodicom.sinks import DirectorySink, MemorySink, Sink

__version__ = "0.1.0.dev0"

__all__ = [
    "AccessPolicy",
    "AssociationAborted",
    "AssociationError",
    "AssociationPool",
    "AssociationRejected",
    "CandidateSeries",
    "CheckedBy",
    "Client",
    "CommitmentJournal",
    "CommitmentRegistry",
    "CommitmentResult",
    "CommitmentTimeout",
    "ConnectionClosed",
    "ContextProposal",
    "DicomError",
    "DicomTimeoutError",
    "DimseError",
    "DirectorySink",
    "FailedInstance",
    "FailureReason",
    "Find",
    "FindError",
    "FindOptions",
    "FindResult",
    "HierarchicalFind",
    "HierarchyResult",
    "IdentityType",
    "Instance",
    "InstanceArrived",
    "KeyCheck",
    "Level",
    "Limits",
    "LocalProtocolError",
    "MemorySink",
    "MoveDestinationUnknown",
    "NoAcceptedContext",
    "PDUDecodeError",
    "Peer",
    "PeerAddress",
    "PendingCommitment",
    "PoolOptions",
    "PoolTimeout",
    "PresentationContext",
    "Progress",
    "Query",
    "QueryError",
    "QueryModel",
    "ReferencedInstance",
    "Retrieval",
    "RetrieveError",
    "RetrieveResult",
    "Series",
    "SeriesSelection",
    "Session",
    "Sink",
    "StatusError",
    "StoreOutcome",
    "StoreResult",
    "StoredAndCommitted",
    "Timeouts",
    "UnsupportedBackend",
    "UserIdentity",
    "__version__",
]

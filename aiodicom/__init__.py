"""aiodicom: an asyncio-native DICOM Query/Retrieve client with an embedded Storage SCP."""

from aiodicom.association import Timeouts
from aiodicom.client import Client, Peer
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
from aiodicom.model import Level, QueryModel
from aiodicom.negotiation import ContextProposal, PresentationContext
from aiodicom.query import Query
from aiodicom.series import Series
from aiodicom.services.find import FindError, FindOptions, FindResult
from aiodicom.services.retrieve import (
    InstanceArrived,
    MoveDestinationUnknown,
    Progress,
    RetrieveError,
    RetrieveResult,
)
from aiodicom.services.store import StoreOutcome, StoreResult
from aiodicom.session import Session
from aiodicom.sinks import DirectorySink, MemorySink

__version__ = "0.1.0.dev0"

__all__ = [
    "AssociationAborted",
    "AssociationError",
    "AssociationRejected",
    "Client",
    "ConnectionClosed",
    "ContextProposal",
    "DicomError",
    "DicomTimeoutError",
    "DimseError",
    "DirectorySink",
    "FindError",
    "FindOptions",
    "FindResult",
    "Instance",
    "InstanceArrived",
    "Level",
    "LocalProtocolError",
    "MemorySink",
    "MoveDestinationUnknown",
    "NoAcceptedContext",
    "PDUDecodeError",
    "Peer",
    "PresentationContext",
    "Progress",
    "Query",
    "QueryError",
    "QueryModel",
    "RetrieveError",
    "RetrieveResult",
    "Series",
    "Session",
    "StatusError",
    "StoreOutcome",
    "StoreResult",
    "Timeouts",
    "UnsupportedBackend",
    "__version__",
]

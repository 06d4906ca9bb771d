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
    StatusError,
)
from aiodicom.negotiation import ContextProposal, PresentationContext
from aiodicom.session import Session

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
    "LocalProtocolError",
    "NoAcceptedContext",
    "PDUDecodeError",
    "Peer",
    "PresentationContext",
    "Session",
    "StatusError",
    "Timeouts",
    "__version__",
]

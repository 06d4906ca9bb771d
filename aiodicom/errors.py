"""The exception hierarchy: every error aiodicom raises is a :class:`DicomError`."""

from __future__ import annotations

from aiodicom.pdu_types import describe_rejection


class DicomError(Exception):
    """Base class of every error raised by aiodicom."""


class UnsupportedBackend(DicomError, RuntimeError):
    """aiodicom was called outside an asyncio event loop (under trio, for example)."""


class PDUDecodeError(DicomError):
    """Bytes received from a peer are not a well-formed PDU.

    ``offset`` is the position in the PDU (from its first header byte) where decoding failed.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at offset {offset})")
        self.reason = message
        self.offset = offset


class LocalProtocolError(DicomError):
    """Our own code asked the association for something its current state does not allow."""


class AssociationError(DicomError):
    """Base class for failures to establish or keep an association."""


class AssociationRejected(AssociationError):
    """The peer (or its provider) answered A-ASSOCIATE-RJ."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        self.result = result
        self.source = source
        self.reason = reason
        super().__init__(describe_rejection(result, source, reason))


class AssociationAborted(AssociationError):
    """The association was aborted (A-ABORT received, or the provider gave up)."""

    def __init__(self, message: str, source: int | None = None, reason: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.reason = reason


class ConnectionClosed(AssociationAborted):
    """The peer closed the TCP connection without releasing or aborting the association."""


class DicomTimeoutError(DicomError, TimeoutError):
    """A connect, ACSE, DIMSE or network timeout expired."""


class NoAcceptedContext(DicomError):
    """No accepted presentation context can carry the requested SOP class."""


class QueryError(DicomError, ValueError):
    """A query that cannot be sent as asked: the message names the offending key and says why.

    ``key`` is that keyword (dotted for a key inside a sequence item), or ``None`` when the
    problem is not one key's.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class DimseError(DicomError):
    """A malformed or unexpected DIMSE message."""


class StatusError(DicomError):
    """A DIMSE operation ended with a failure (or otherwise unwanted) status."""

    def __init__(self, status: int, meaning: str, error_comment: str | None = None) -> None:
        self.status = status
        self.meaning = meaning
        self.error_comment = error_comment
        text = f"status 0x{status:04X}: {meaning}"
        if error_comment:
            text += f" ({error_comment})"
        super().__init__(text)

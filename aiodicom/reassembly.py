"""Reassembly of received DIMSE messages (PS3.7, PS3.8 Annex E) from presentation data values,
with their data sets going to a writer as they arrive (memory, or a spool file). Pure code, no
I/O; the command set codec is :mod:`aiodicom.dimse`.
"""

from __future__ import annotations

from collections.abc import Callable, Container

from aiodicom.dimse import NO_DATASET, DataSetWriter, DimseMessage, command_name, decode_command
from aiodicom.errors import DimseError
from aiodicom.pdu import PDataTF

__all__ = ["DataSetOpener", "MemoryWriter", "MessageAssembler"]


# --- reassembly ---------------------------------------------------------------------------------


DataSetOpener = Callable[[int, dict[str, object]], "DataSetWriter | None"]
"""Chooses a writer for the data set that follows a command (context ID, command); ``None``
keeps it in memory."""


class MemoryWriter:
    """The default: fragments copied once, into one buffer that grows in place."""

    __slots__ = ("_buffer", "_whole")

    def __init__(self) -> None:
        self._buffer: bytearray | None = None
        self._whole: bytes | None = None

    def write(self, fragment: memoryview) -> None:
        if self._buffer is None:
            self._buffer = bytearray(fragment)
        else:
            self._buffer += fragment

    def write_last(self, fragment: memoryview) -> None:
        """The last fragment; when it is also the first (a C-FIND identifier, a small C-STORE),
        the data set becomes immutable ``bytes`` in its one copy, which is what pydicom's
        values need anyway."""
        if self._buffer is None:
            self._whole = bytes(fragment)
        else:
            self._buffer += fragment

    def close(self) -> bytes | memoryview:
        whole, buffer = self._whole, self._buffer
        self._whole = self._buffer = None
        if whole is not None:
            return whole
        if buffer is None:
            return b""
        # Read-only, so that a data set handed to several consumers cannot be changed by one.
        return memoryview(buffer).toreadonly()

    def discard(self) -> None:
        self._whole = self._buffer = None


class MessageAssembler:
    """Reassembles DIMSE messages from the PDVs of received P-DATA-TF PDUs.

    Messages are not interleaved (PS3.8 Annex E): a message's command fragments come first, then,
    if the command says so, its data set fragments, all on one presentation context, and only
    then the next message. Violations raise :class:`DimseError`; the assembler is not usable
    afterwards (the association should be aborted).

    PDV values are views of a reused receive buffer, valid only while :meth:`feed` runs: command
    fragments are copied, data set fragments go to a :class:`DataSetWriter` as they arrive
    (``open_data`` may choose one per message, for example a file for a large C-STORE), so a
    data set is copied once, or not at all when written straight to disk.
    """

    def __init__(self, open_data: DataSetOpener | None = None) -> None:
        self.open_data = open_data
        #: Presentation contexts a message may use (``None``: any); a PDV on another one is a
        #: :class:`DimseError` at once, before anything of it is kept.
        self.accepted_contexts: Container[int] | None = None
        #: The largest command set accepted (``None``: no limit).
        self.max_command_bytes: int | None = None
        self._context_id: int | None = None
        self._command_parts: list[bytes] = []
        self._command_size = 0
        self._command: dict[str, object] | None = None
        self._writer: DataSetWriter | None = None
        # The writer's flush(), if it has one: it then keeps the fragments of a read as views
        # until flush() (see DataSetWriter).
        self._flush_writer: Callable[[], None] | None = None
        # Kept only to explain a stray data fragment in the error message.
        self._last_had_no_dataset: str | None = None

    @property
    def in_progress(self) -> bool:
        """True while part of a message has been received but not all of it."""
        return self._context_id is not None

    def feed(self, pdu: PDataTF) -> list[DimseMessage]:
        """Take one P-DATA-TF; return the messages it completed (often none, rarely several)."""
        done: list[DimseMessage] = []
        try:
            for pdv in pdu.pdvs:
                control = (2 if pdv.is_last else 0) | (1 if pdv.is_command else 0)
                msg = self.feed_value(pdv.context_id, control, memoryview(pdv.data))
                if msg is not None:
                    done.append(msg)
        finally:
            self.flush()
        return done

    def flush(self) -> None:
        """The values fed since the last call are about to become invalid (the receive buffer
        is read into again): a writer keeping views of them writes them out now."""
        flush = self._flush_writer
        if flush is not None:
            flush()

    def abandon(self) -> None:
        """The association ended: a message in progress will never complete."""
        writer, self._writer = self._writer, None
        self._flush_writer = None
        if writer is not None:
            writer.discard()
        self._context_id = None
        self._command = None
        self._command_parts = []
        self._command_size = 0

    def feed_value(self, context_id: int, control: int, value: memoryview) -> DimseMessage | None:
        """Take one presentation data value (its message control header as sent: bit 0 command,
        bit 1 last fragment); return the message it completed. What the state machine hands
        over for each value it receives (:attr:`~aiodicom.statemachine.AssociationStateMachine.
        on_data_value`), without a PDU object."""
        if self._context_id is None:
            accepted = self.accepted_contexts
            if accepted is not None and context_id not in accepted:
                raise DimseError(
                    f"PDV on presentation context {context_id}, which this association "
                    "did not accept"
                )
            self._context_id = context_id
        elif context_id != self._context_id:
            raise DimseError(
                f"PDV for presentation context {context_id} received in the middle of a "
                f"message on presentation context {self._context_id}"
            )

        if self._command is None:
            if not control & 1:
                hint = ""
                if self._last_had_no_dataset is not None:
                    hint = f" (the previous {self._last_had_no_dataset} said it has no data set)"
                raise DimseError(f"data set fragment received before any command{hint}")
            self._command_size += len(value)
            limit = self.max_command_bytes
            if limit is not None and self._command_size > limit:
                raise DimseError(
                    f"command set of more than {limit} bytes received (fragments without end?)"
                )
            if control & 2 and not self._command_parts:
                # The usual command, in one fragment: decoded where it lies (decode_command
                # keeps no view of it).
                return self._command_complete(value)
            self._command_parts.append(bytes(value))
            if control & 2:
                parts, self._command_parts = self._command_parts, []
                return self._command_complete(b"".join(parts))
            return None

        if control & 1:
            raise DimseError(
                "command fragment received while the data set of the previous command was "
                "still expected"
            )
        writer = self._writer
        assert writer is not None
        if not control & 2:
            writer.write(value)
            return None
        if isinstance(writer, MemoryWriter):
            writer.write_last(value)
        else:
            writer.write(value)
        return self._data_complete()

    def _command_complete(self, encoded: bytes | memoryview) -> DimseMessage | None:
        self._command_size = 0
        command = decode_command(encoded)
        field = command.get("CommandField")
        if not isinstance(field, int):
            raise DimseError("received command set has no Command Field (0000,0100)")
        data_set_type = command.get("CommandDataSetType")
        if data_set_type is None:
            raise DimseError(
                f"received {command_name(field)} has no Command Data Set Type (0000,0800)"
            )
        context_id = self._context_id
        assert context_id is not None
        if data_set_type != NO_DATASET:
            self._command = command
            chosen = self.open_data(context_id, command) if self.open_data is not None else None
            self._writer = chosen if chosen is not None else MemoryWriter()
            self._flush_writer = getattr(chosen, "flush", None)
            return None
        self._context_id = None
        self._last_had_no_dataset = command_name(field)
        return DimseMessage(context_id, command, None)

    def _data_complete(self) -> DimseMessage:
        writer = self._writer
        command = self._command
        context_id = self._context_id
        assert writer is not None and command is not None and context_id is not None
        self._writer = None
        self._flush_writer = None  # close() writes out what it kept
        self._command = None
        self._context_id = None
        self._last_had_no_dataset = None
        data = writer.close()
        return DimseMessage(
            context_id, command, data, writer=None if isinstance(writer, MemoryWriter) else writer
        )

"""Capture the fuzzing seed corpus (tests/fuzz_seeds/) from real DICOM exchanges.

    cd <repo> && PYTHONPATH=$PWD python tests/fuzz/capture_seeds.py [--out tests/fuzz_seeds]

Starts DCMTK ``dcmqrscp`` and Orthanc on free loopback ports, both serving the generated test
corpus, and puts a recording :mod:`peers.faulty_proxy` in the middle of these exchanges:

* aiodicom C-ECHO, C-FIND, C-MOVE, C-GET against each (the C-MOVE's C-STOREs from the PACS to
  our acceptor also go through a proxy registered as the move destination);
* DCMTK ``findscu``, ``getscu`` against dcmqrscp and ``storescu`` to our acceptor (DCMTK as the
  requestor, our acceptor answering).

From the recorded byte streams it writes, each file one seed:

* ``pdu/``: every distinct whole PDU (P-DATA-TF over 8 KiB left out, a few of each kind kept);
* ``stream/``: the first 16 KiB each way of each connection (``*-up.bin`` is what the
  requestor sent, ``*-down.bin`` what it received): state machine and acceptor inputs;
* ``command/``: DIMSE command sets, reassembled from the command PDVs;
* ``dataset/``: data sets (first 4 KiB) reassembled from the data PDVs, named after their
  transfer syntax (``<uid>--<n>.bin``), for the data set peeking targets.

Deterministic apart from the UIDs the peers generate (dcmqrscp's and Orthanc's implementation
UIDs and the sub-operation Message IDs stay the same between runs of the same versions).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import anyio

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from peers import LOOPBACK, in_thread  # noqa: E402
from peers.corpus import generate_corpus  # noqa: E402
from peers.dcmtk import DcmQrScp, findscu, getscu, storescu  # noqa: E402
from peers.faulty_proxy import FaultyProxy, faulty_proxy, split_pdus  # noqa: E402
from peers.orthanc import Orthanc  # noqa: E402

import aiodicom  # noqa: E402
from aiodicom.errors import DicomError  # noqa: E402
from aiodicom.pdu import AssociateAC, PDataTF, decode_pdu  # noqa: E402
from aiodicom.sinks import MemorySink  # noqa: E402

AE = "AIOSCU"
STREAM_LIMIT = 16 * 1024
PDATA_LIMIT = 8 * 1024
DATASET_LIMIT = 4 * 1024
PER_KIND = 12


class Seeds:
    """Collects what the proxies recorded and writes it out as seed files."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.pdus: dict[bytes, str] = {}
        self.per_kind: dict[int, int] = defaultdict(int)
        self.streams: dict[str, bytes] = {}
        self.commands: dict[bytes, None] = {}
        self.datasets: dict[bytes, str] = {}

    def add(self, name: str, proxy: FaultyProxy) -> None:
        for connection in proxy.connections:
            tag = f"{name}-{connection.index}"
            self.streams[f"{tag}-up"] = bytes(connection.up[:STREAM_LIMIT])
            self.streams[f"{tag}-down"] = bytes(connection.down[:STREAM_LIMIT])
            syntaxes: dict[int, str] = {}
            for pdu_bytes in split_pdus(connection.down):
                self._pdu(pdu_bytes)
                if pdu_bytes[0] == 0x02:
                    ac = decode_pdu(pdu_bytes)
                    assert isinstance(ac, AssociateAC)
                    syntaxes = {c.context_id: c.transfer_syntax for c in ac.presentation_contexts
                                if c.transfer_syntax}
            for stream in (connection.up, connection.down):
                self._messages(stream, syntaxes)

    def _pdu(self, data: bytes) -> None:
        kind = data[0]
        if data in self.pdus or (kind == 0x04 and len(data) > PDATA_LIMIT):
            return
        if self.per_kind[kind] >= PER_KIND:
            return
        self.per_kind[kind] += 1
        self.pdus[data] = f"type{kind:02x}"

    def _messages(self, stream: bytes | bytearray, syntaxes: dict[int, str]) -> None:
        command = bytearray()
        data = bytearray()
        for pdu_bytes in split_pdus(stream):
            self._pdu(pdu_bytes)
            if pdu_bytes[0] != 0x04:
                continue
            try:
                pdata = decode_pdu(pdu_bytes)
            except DicomError:
                continue
            assert isinstance(pdata, PDataTF)
            for pdv in pdata.pdvs:
                target = command if pdv.is_command else data
                target += pdv.data
                if not pdv.is_last:
                    continue
                if pdv.is_command:
                    self.commands[bytes(command)] = None
                    command.clear()
                else:
                    syntax = syntaxes.get(pdv.context_id, "1.2.840.10008.1.2")
                    self.datasets.setdefault(bytes(data[:DATASET_LIMIT]), syntax)
                    data.clear()

    def write(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sub in ("pdu", "stream", "command", "dataset"):
            directory = self.out / sub
            directory.mkdir(parents=True, exist_ok=True)
            for old in directory.glob("*.bin"):
                old.unlink()
        for data, name in self.pdus.items():
            _write(self.out / "pdu", name, data)
        for name, data in self.streams.items():
            if data:
                (self.out / "stream" / f"{name}.bin").write_bytes(data)
        for data in self.commands:
            _write(self.out / "command", "command", data)
        for data, syntax in self.datasets.items():
            _write(self.out / "dataset", syntax, data)
        for sub in ("pdu", "stream", "command", "dataset"):
            counts[sub] = len(list((self.out / sub).glob("*.bin")))
        return counts


def _write(directory: Path, prefix: str, data: bytes) -> None:
    digest = hashlib.sha256(data).hexdigest()[:12]
    (directory / f"{prefix}--{digest}.bin").write_bytes(data)


async def capture(out: Path, work: Path) -> dict[str, int]:
    corpus = generate_corpus(work / "corpus")
    study = corpus.studies[0]
    series = study.series[0]
    seeds = Seeds(out)
    sink = MemorySink()
    # The PACSs send C-STOREs to this proxy; it forwards to whichever client runs at the time.
    async with faulty_proxy(LOOPBACK, 1) as to_us:
        qr = DcmQrScp(work / "dcmqrscp", move_destinations=[(AE, LOOPBACK, to_us.port)])
        qr.load(corpus.instances)
        qr.start()
        orthanc = Orthanc(work / "orthanc", modalities={AE: (AE, LOOPBACK, to_us.port)})
        orthanc.start()
        try:
            orthanc.upload(corpus.instances)
            for name, host, port, called in (
                ("dcmqrscp", qr.host, qr.port, qr.ae_title),
                ("orthanc", orthanc.host, orthanc.port, orthanc.ae_title),
            ):
                async with faulty_proxy(host, port) as proxy, aiodicom.Client(
                    AE, listen_port=0
                ) as client:
                    assert client.listen_port is not None
                    to_us.target = (LOOPBACK, client.listen_port)
                    peer = client.peer(LOOPBACK, proxy.port, called)
                    await peer.echo()
                    async for _ in peer.find(aiodicom.Query.study(PatientID="*")):
                        pass
                    query = aiodicom.Query.series(
                        StudyInstanceUID=study.study_instance_uid,
                        SeriesInstanceUID=series.series_instance_uid)
                    await peer.move(query)
                    await peer.get(query)
                seeds.add(f"aiodicom-{name}", proxy)
            async with faulty_proxy(qr.host, qr.port) as proxy:
                await in_thread(findscu, LOOPBACK, proxy.port, qr.ae_title,
                                {"QueryRetrieveLevel": "STUDY", "PatientID": "*",
                                 "StudyInstanceUID": ""})
                await in_thread(getscu, LOOPBACK, proxy.port, qr.ae_title,
                                {"QueryRetrieveLevel": "SERIES",
                                 "StudyInstanceUID": study.study_instance_uid,
                                 "SeriesInstanceUID": series.series_instance_uid},
                                output_dir=work / "getscu")
            seeds.add("dcmtk-dcmqrscp", proxy)
            async with aiodicom.Client(AE, listen_port=0, unexpected_deliveries=sink) as client:
                assert client.listen_port is not None
                async with faulty_proxy(LOOPBACK, client.listen_port) as proxy:
                    await in_thread(storescu, LOOPBACK, proxy.port, AE, series.files)
            seeds.add("dcmtk-storescu", proxy)
        finally:
            qr.stop()
            orthanc.stop()
    seeds.add("to-acceptor", to_us)
    return seeds.write()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TESTS / "fuzz_seeds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "getscu").mkdir()
        counts = anyio.run(capture, args.out, Path(work))
    print(" ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()

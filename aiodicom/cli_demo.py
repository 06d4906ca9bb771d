"""``python -m aiodicom demo``: find a series and retrieve it by C-MOVE and by C-GET into memory
(``client.retrieve_series``: keys the PACS ignores are checked before bulk transfer),
and print it as a volume, with timings.

Without ``--host`` it starts the embedded Q/R SCP (:class:`~aiodicom.server.QRServer`) on a
free loopback port with the synthetic patients, and runs the client against it in the same
process, on the same event loop. With ``--host/--port/--aec`` it uses a real PACS instead, which
must know our AE title (``--aet``) at ``--our-port`` as a C-MOVE destination.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, Literal

import anyio

from aiodicom.client import Client, PeerAddress
from aiodicom.series import Series
from aiodicom.server import InstanceIndex, QRServer
from aiodicom.sinks import MemorySink
from aiodicom.testing.synthetic import synthetic_instances

__all__ = ["demo"]


@asynccontextmanager
async def _embedded(args: SimpleNamespace) -> AsyncIterator[QRServer | None]:
    if args.host:
        yield None
        return
    started = time.perf_counter()
    with InstanceIndex() as index:
        for instance in synthetic_instances():
            index.store(instance)
            await anyio.lowlevel.checkpoint()  # one instance per step: the loop stays free
        async with QRServer("AIOQR", index) as server:
            print(f"embedded Q/R SCP {server.ae_title} on 127.0.0.1:{server.listen_port} with "
                  f"{len(index)} synthetic instances ({_ms(started)})")
            yield server


async def demo(args: SimpleNamespace) -> int:
    """The demo; ``args`` as the options of ``aiodicom demo`` (``aiodicom.cli.demo``) name them."""
    async with _embedded(args) as server:
        peer = (
            PeerAddress(*server.address) if server is not None
            else PeerAddress(args.host, args.port, args.aec)
        )
        async with Client(
            args.aet, peer=peer, listen_port=args.our_port, listen_host=args.listen_host
        ) as client:
            assert client.listen_port is not None
            if server is not None:
                server.add_move_destination(args.aet, args.listen_host, client.listen_port)
            print(f"client {args.aet} (acceptor on {args.listen_host}:{client.listen_port}) -> "
                  f"{peer.ae_title} at {peer.host}:{peer.port}")
            volumes: list[dict[str, Any]] = []
            for kind in ("move", "get"):
                if getattr(args, f"no_{kind}"):
                    continue
                volume = await _retrieve(client, args, kind, report=not volumes)
                if volume is None:
                    return 1
                volumes.append(volume)
            if len(volumes) == 2:
                same = {k: v for k, v in volumes[0].items() if k != "via"} == {
                    k: v for k, v in volumes[1].items() if k != "via"}
                print("C-MOVE and C-GET volumes " + ("agree" if same else "DIFFER"))
                if not same:
                    return 1
    return 0


async def _retrieve(
    client: Client, args: SimpleNamespace, kind: Literal["move", "get"], *, report: bool
) -> dict[str, Any] | None:
    """Find the series and retrieve it by ``kind`` (``client.retrieve_series``: keys the PACS
    ignores, such as SeriesDescription at dcmqrscp, are checked before bulk transfer); its
    volume described, or ``None`` when nothing matched."""
    name = f"C-{kind.upper()}"
    started = time.perf_counter()
    selection = await client.retrieve_series(
        method=kind, sink=MemorySink(), PatientID=args.patient_id, StudyDate=args.study_date,
        SeriesDescription=args.series_description,
    )
    took = _ms(started)
    if report or not selection.series:
        print(f"C-FIND: {len(selection.candidates)} series of {args.patient_id} on "
              f"{args.study_date} ({len(selection.series)} matching "
              f"{args.series_description!r})")
        print(selection.report())
    if not selection.series:
        print("no series found")
        return None
    series = selection.series[0]
    print(f"{name}: {len(series.instances)} instances, {selection.bytes_received} bytes, "
          f"find and retrieve in {took}")
    started = time.perf_counter()
    volume = _describe(series)
    print(f"volume ({name}, {volume['via']}, {_ms(started)}): "
          f"size {' x '.join(map(str, volume['size']))}, "
          f"spacing {_vector(volume['spacing'])}, origin {_vector(volume['origin'])}, "
          f"direction {_vector(volume['direction'])}")
    return volume


def _describe(series: Series) -> dict[str, Any]:
    """Size (x, y, z), spacing, origin and direction (row-major 3x3) of the volume."""
    try:
        importlib.import_module("SimpleITK")
    except ImportError:
        return _describe_numpy(series)
    image = series.to_sitk()
    return {
        "via": "SimpleITK",
        "size": tuple(image.GetSize()),
        "spacing": tuple(image.GetSpacing()),
        "origin": tuple(image.GetOrigin()),
        "direction": tuple(image.GetDirection()),
    }


def _describe_numpy(series: Series) -> dict[str, Any]:
    # The geometry as SimpleITK would give it, from the sorted data sets. Without NumPy (the
    # core install) the size comes from the headers: the demo still shows what arrived.
    try:
        pixels = series.to_numpy()
        via = "NumPy"
        shape = (int(pixels.shape[2]), int(pixels.shape[1]), int(pixels.shape[0]))
    except ImportError:
        pixels = None
        via = "headers; pip install 'aiodicom[itk]' for the pixels"
    datasets = series.datasets()
    first = datasets[0]
    cosines = [float(v) for v in first.ImageOrientationPatient]
    row, column = cosines[:3], cosines[3:]
    normal = [row[1] * column[2] - row[2] * column[1], row[2] * column[0] - row[0] * column[2],
              row[0] * column[1] - row[1] * column[0]]
    positions = [[float(v) for v in ds.ImagePositionPatient] for ds in datasets]
    slice_spacing = (
        math.dist(positions[0], positions[1]) if len(positions) > 1
        else float(first.get("SliceThickness", 1) or 1)
    )
    row_spacing, column_spacing = (float(v) for v in first.get("PixelSpacing", (1, 1)))
    if pixels is None:
        shape = (int(first.Columns), int(first.Rows), len(datasets))
    return {
        "via": via,
        "size": shape,
        "spacing": (column_spacing, row_spacing, slice_spacing),
        "origin": tuple(positions[0]),
        "direction": tuple(row[i] if j == 0 else column[i] if j == 1 else normal[i]
                           for i in range(3) for j in range(3)),
    }


def _vector(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"

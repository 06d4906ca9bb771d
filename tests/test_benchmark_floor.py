"""The layer-free SCP of benchmarks/floor.py, the measuring instrument behind the
``--experiments`` rows "layer-free SCP": it must do the same work as the library's SCP, or its
row measures less than it claims. Our own client sends it real C-STOREs; its files must be the
ones a DirectorySink writes, byte for byte, and a data set that is not what its command says
must be refused as the library refuses it.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import attrs
import pytest

import aiodicom
from aiodicom.sinks import DirectorySink
from aiodicom.testing.synthetic import synthetic_instances
from benchmarks.floor import MODES, listen


def _instances(n: int, size: int = 16) -> list[aiodicom.Instance]:
    return list(islice(synthetic_instances(rows=size, columns=size, slices=n), n))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.dcm")}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [16, 256], ids=["small", "spooled"])
async def test_floor_scp_writes_what_a_directory_sink_writes(
    tmp_path: Path, mode: str, size: int
) -> None:
    # 256 x 256 pixels: 128 kB data sets, past the 64 KiB a DirectorySink's spool holds in
    # memory, so that they go to their files fragment by fragment as they arrive.
    instances = _instances(3, size)
    server, written = await listen(str(tmp_path / "floor"), 0, mode)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiodicom.Client("FLOORSCU") as client:
            result = await client.peer("127.0.0.1", port, "FLOOR").store(instances)
    finally:
        server.close()
    assert [o.status for o in result.outcomes] == [0x0000] * len(instances)
    assert written == [len(instances)]
    # The library's own SCP, receiving the same instances from the same AE title.
    sink = DirectorySink(tmp_path / "library")
    async with (
        aiodicom.Client("STORESCP", listen_port=0, unexpected_deliveries=sink) as scp,
        aiodicom.Client("FLOORSCU") as client,
    ):
        assert scp.listen_port is not None
        await client.peer("127.0.0.1", scp.listen_port, "STORESCP").store(instances)
    floor_files = _files(tmp_path / "floor")
    assert len(floor_files) == len(instances)
    assert floor_files == _files(tmp_path / "library")


@pytest.mark.parametrize("mode", MODES)
async def test_floor_scp_refuses_a_data_set_that_is_not_its_commands(
    tmp_path: Path, mode: str
) -> None:
    (instance, other) = _instances(2)
    # The command names one SOP Instance UID, the data set carries another's.
    lying = attrs.evolve(instance, sop_instance_uid=other.sop_instance_uid, data=instance.data)
    server, written = await listen(str(tmp_path), 0, mode)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiodicom.Client("FLOORSCU") as client:
            result = await client.peer("127.0.0.1", port, "FLOOR").store([lying])
    finally:
        server.close()
    assert [o.status for o in result.outcomes] == [0xA900]
    assert written == [0] and not _files(tmp_path)

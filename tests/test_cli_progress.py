"""The progress bar of ``aiodicom get`` seen on a terminal (a pty) during a C-GET of 263 MB from
``aiodicom qrscp``: it is drawn on stderr, its sub-operation count advances through many values
up to the total, and the summary follows; the data on stdout (piped) carry no terminal escape,
and without a terminal no bar is drawn at all."""

from __future__ import annotations

import copy
import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import uuid
from pathlib import Path

import pytest
from peers.aiodicom_cli import ROOT, aiodicom, cli_env, qrscp

from aiodicom.testing.synthetic import synthetic_datasets

INSTANCES = 502
ROWS = COLUMNS = 512  # 16-bit: 512 kB of pixel data per instance, 263 MB in all
PATIENT = "AIO-0001"


def write_large_series(directory: Path) -> int:
    """INSTANCES CT slices of one series (a synthetic header, pixel data made up fast); the
    bytes of pixel data written."""
    template = next(iter(synthetic_datasets(rows=8, columns=8, slices=1)))
    series = f"2.25.{uuid.uuid4().int}"
    directory.mkdir(parents=True, exist_ok=True)
    for number in range(1, INSTANCES + 1):
        ds = copy.deepcopy(template)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"2.25.{uuid.uuid4().int}"
        ds.InstanceNumber = number
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.PixelData = number.to_bytes(2, "little") * (ROWS * COLUMNS)
        ds.save_as(directory / f"{number:04d}.dcm", enforce_file_format=True)
    return INSTANCES * ROWS * COLUMNS * 2


def run_on_a_terminal(args: list[str]) -> tuple[int, str, bytes]:
    """``python -m aiodicom ARGS`` with stderr on a pty (120 x 40) and stdout piped: the exit
    code, what the terminal showed, what stdout carried. Both are read while it runs (a full
    pty would block it)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = cli_env({"TERM": "xterm-256color"})
    env.pop("COLUMNS", None)  # the terminal's own width
    process = subprocess.Popen([sys.executable, "-m", "aiodicom", *args],
                               stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                               cwd=ROOT, env=env)
    os.close(slave)
    assert process.stdout is not None
    out = process.stdout.fileno()
    terminal, stdout = b"", b""
    open_fds = {master, out}
    try:
        while open_fds:
            ready, _, _ = select.select(list(open_fds), [], [], 300)
            assert ready, "no output for 300 s"
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the pty's other side closed
                    chunk = b""
                if not chunk:
                    open_fds.discard(fd)
                elif fd == master:
                    terminal += chunk
                else:
                    stdout += chunk
        code = process.wait(timeout=60)
    finally:
        os.close(master)
        process.stdout.close()
    return code, terminal.decode(errors="replace"), stdout


@pytest.mark.interop
def test_progress_bar_advances_during_a_263_mb_c_get(tmp_path: Path) -> None:
    size = write_large_series(tmp_path / "archive")
    assert size > 263_000_000
    with qrscp(tmp_path / "archive", tmp_path, synthetic=False) as server:
        get = ["get", server.host, str(server.port), "-aec", server.ae_title, "-L", "PATIENT",
               "-k", f"PatientID={PATIENT}"]
        code, terminal, stdout = run_on_a_terminal([*get, "-o", str(tmp_path / "tty")])
        piped = aiodicom(*get, "-o", str(tmp_path / "piped"), timeout=600)
        table = run_on_a_terminal(["find", server.host, str(server.port), "-aec",
                                   server.ae_title, "-L", "SERIES", "-k", f"PatientID={PATIENT}",
                                   "-k", "SeriesInstanceUID", "-k", "Modality"])
    assert code == 0, terminal
    assert len(list((tmp_path / "tty").rglob("*.dcm"))) == INSTANCES
    for received in ("tty", "piped", "archive"):  # 790 MB: not kept among pytest's last runs
        shutil.rmtree(tmp_path / received)
    # The bar: "C-GET ━━━━━━━━  37/502 ... 61.2 MB/s 0:00:01", redrawn in place.
    assert "\x1b[" in terminal  # drawn for a terminal (colours, cursor)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal)
    counts = [int(n) for n in re.findall(rf"\b(\d+)/{INSTANCES}\b", shown)]
    assert counts and counts[-1] == INSTANCES, shown[-2000:]
    assert counts == sorted(counts)  # never goes back
    between = {n for n in counts if 0 < n < INSTANCES}
    assert len(between) >= 3, counts  # redrawn while the instances arrived
    assert "C-GET" in shown and "MB/s" in shown
    summary = re.search(rf"C-GET into \S+: {INSTANCES} completed, 0 failed, 0 warning; "
                        r"([\d.]+) MB, ([\d.]+) MB/s", shown)
    assert summary, shown[-2000:]
    assert float(summary[1]) == pytest.approx(size / 1e6, rel=0.01)
    assert shown.index("C-GET into") > shown.rindex(f"{INSTANCES}/{INSTANCES}")
    # stdout stays the data: nothing at all here, and never a terminal escape
    assert stdout == b""
    # Without a terminal: the summary alone, no bar and no escape.
    assert piped.returncode == 0, piped.stderr
    assert f"{INSTANCES} completed, 0 failed" in piped.stderr
    assert f"/{INSTANCES}" not in piped.stderr and "\x1b" not in piped.stderr + piped.stdout
    # A table on piped stdout, with stderr on a terminal: plain text, no colour
    assert table[0] == 0, table[1]
    assert b"CT" in table[2] and b"\x1b" not in table[2]
    print(summary[0])  # the rate, for the record (pytest -s)

"""Shared fixtures: a generated corpus and REAL peers on free loopback ports.

Session-scoped (started once and shared: do not store into them, use a factory for that):
    corpus               -> peers.corpus.Corpus (files under a session tmp dir)
    dcmqrscp             -> peers.dcmtk.DcmQrScp, AE "QRSCP", corpus loaded, no move destinations
    storescp             -> peers.dcmtk.StoreScp, AE "STORESCP" (call .clear() before use)
    orthanc              -> peers.orthanc.Orthanc, AE "ORTHANC", corpus loaded; move destinations
                            at run time: ``with orthanc.temporary_modality(name, aet, host, port)``
    pynetdicom_echo_scp  -> peers.pynetdicom_scp.EchoScp, AE "ECHOSCP"

Function-scoped factories (each call starts a new peer, stopped at the end of the test):
    dcmqrscp_factory(move_destinations=[("AIOSCU", "127.0.0.1", port)], max_pdu=4096,
                     ae_title="QRSCP", load_corpus=True, fork=True, extra_args=())
    storescp_factory(ae_title="STORESCP", max_pdu=None, fork=False, extra_args=())
    orthanc_factory(modalities={"AIOSCU": ("AIOSCU", "127.0.0.1", port)}, max_pdu=None,
                    worklist_dir=None, extra_config=None, load_corpus=True)
    pynetdicom_find_scp_factory(datasets, responder=None, delay=0.0, final_status=0,
                                ae_title="FINDSCP", max_pdu=16384)
    pynetdicom_echo_scp_factory(ae_title="ECHOSCP", max_pdu=16384)

Helpers live in the ``peers`` package (``from peers.dcmtk import findscu``; tests/ has no
__init__.py, so pytest puts tests/ on sys.path).  From async tests, call the blocking DCMTK
helpers through ``await peers.in_thread(fn, ...)``.
A peer that cannot be found fails the test when CI=true and skips it otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from peers import (
    finish_stopping,
    in_ci,
    missing_peer,
    require_executable,
    require_module,
    set_current_test,
)
from peers.corpus import Corpus, generate_corpus
from peers.dcmtk import DCMQRIDX, DCMQRSCP, STORESCP, DcmQrScp, StoreScp
from peers.orthanc import ORTHANC, WORKLIST_PLUGIN, Orthanc

__all__ = ["missing_peer", "require_executable", "require_module"]

# Fixtures that start a real peer: tests using them get the "interop" marker automatically.
PEER_FIXTURES = frozenset({
    "dcmqrscp", "dcmqrscp_factory", "storescp", "storescp_factory", "orthanc",
    "orthanc_factory", "pynetdicom_echo_scp", "pynetdicom_echo_scp_factory",
    "pynetdicom_find_scp_factory",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PEER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.interop)


def _as_current_test(item: pytest.Item) -> Iterator[None]:
    # Session-scoped peers start during the setup of the first test that asks for them: that
    # test must be marked interop like any other (peers.check_interop_allowed refuses otherwise).
    set_current_test(item.get_closest_marker("interop") is not None)
    try:
        return (yield)
    finally:
        set_current_test(None)


pytest_runtest_setup = pytest.hookimpl(wrapper=True)(_as_current_test)
pytest_runtest_call = pytest.hookimpl(wrapper=True)(_as_current_test)


def pytest_report_header(config: pytest.Config) -> str:
    found = []
    for name, path in (("dcmtk", DCMQRSCP), ("orthanc", ORTHANC)):
        found.append(f"{name}={'yes' if os.access(path, os.X_OK) else 'NO'}")
    where = "CI=true: a missing peer FAILS" if in_ci() else "a missing peer is skipped"
    return f"peers: {', '.join(found)} ({where})"


@pytest.fixture(scope="session", autouse=True)
def _wait_for_stopping_peers() -> Iterator[None]:
    """At the end of the session, wait for peers stopped without waiting (Orthanc)."""
    yield
    finish_stopping()


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """The generated corpus (5 patients, 7 studies, 10 series, 38 instances by default)."""
    return generate_corpus(tmp_path_factory.mktemp("corpus"))


# --------------------------------------------------------------------------------------------
# DCMTK dcmqrscp
# --------------------------------------------------------------------------------------------


def _require_dcmqrscp() -> None:
    require_executable(DCMQRSCP)
    require_executable(DCMQRIDX)


@pytest.fixture(scope="session")
def dcmqrscp(tmp_path_factory: pytest.TempPathFactory, corpus: Corpus) -> Iterator[DcmQrScp]:
    """Session dcmqrscp (AE "QRSCP") serving the corpus; no move destinations.

    For C-MOVE use ``dcmqrscp_factory(move_destinations=[...])`` instead of restarting this one.
    """
    _require_dcmqrscp()
    server = DcmQrScp(tmp_path_factory.mktemp("dcmqrscp"))
    server.load(corpus.instances)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dcmqrscp_factory(
    tmp_path_factory: pytest.TempPathFactory, corpus: Corpus
) -> Iterator[Callable[..., DcmQrScp]]:
    """``make(move_destinations=[(ae, host, port)], max_pdu=16384, load_corpus=True, **kw)``."""
    _require_dcmqrscp()
    started: list[DcmQrScp] = []

    def make(*, load_corpus: bool = True, **kwargs: Any) -> DcmQrScp:
        server = DcmQrScp(tmp_path_factory.mktemp("dcmqrscp_f"), **kwargs)
        started.append(server)
        if load_corpus:
            server.load(corpus.instances)
        return server.start()

    try:
        yield make
    finally:
        for server in started:
            server.stop()


# --------------------------------------------------------------------------------------------
# DCMTK storescp
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def storescp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScp]:
    """Session storescp (AE "STORESCP"); files land in ``.output_dir`` - ``.clear()`` first."""
    require_executable(STORESCP)
    server = StoreScp(tmp_path_factory.mktemp("storescp"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def storescp_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., StoreScp]]:
    """``make(ae_title="STORESCP", max_pdu=4096, fork=False, extra_args=())``."""
    require_executable(STORESCP)
    started: list[StoreScp] = []

    def make(**kwargs: Any) -> StoreScp:
        server = StoreScp(tmp_path_factory.mktemp("storescp_f"), **kwargs)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in started:
            server.stop()


# --------------------------------------------------------------------------------------------
# Orthanc
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory, corpus: Corpus) -> Iterator[Orthanc]:
    """Session Orthanc (AE "ORTHANC") with the corpus.

    Declare a C-MOVE destination at run time: ``orthanc.add_modality("AIOSCU", "AIOSCU",
    "127.0.0.1", port)`` (and ``remove_modality`` afterwards).
    """
    require_executable(ORTHANC)
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    server.start()
    try:
        server.upload(corpus.instances)
        yield server
    finally:
        server.stop(wait=False)


@pytest.fixture
def orthanc_factory(
    tmp_path_factory: pytest.TempPathFactory, corpus: Corpus
) -> Iterator[Callable[..., Orthanc]]:
    """``make(modalities={...}, max_pdu=4096, worklist_dir=..., extra_config={...},
    load_corpus=True)`` -> a started Orthanc of its own."""
    require_executable(ORTHANC)
    started: list[Orthanc] = []

    def make(*, load_corpus: bool = True, **kwargs: Any) -> Orthanc:
        if kwargs.get("worklist_dir") is not None and not Path(WORKLIST_PLUGIN).exists():
            missing_peer(f"Orthanc worklist plugin {WORKLIST_PLUGIN} not installed")
        server = Orthanc(tmp_path_factory.mktemp("orthanc_f"), **kwargs)
        started.append(server)
        server.start()
        if load_corpus:
            server.upload(corpus.instances)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop(wait=False)  # the session-end hook below waits for them


# --------------------------------------------------------------------------------------------
# pynetdicom (in-process test peers)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pynetdicom_echo_scp() -> Iterator[Any]:
    """Session pynetdicom Verification SCP (AE "ECHOSCP"); ``.echoes`` counts C-ECHOs."""
    require_module("pynetdicom")
    from peers.pynetdicom_scp import EchoScp

    scp = EchoScp().start()
    try:
        yield scp
    finally:
        scp.stop()


@pytest.fixture
def pynetdicom_echo_scp_factory() -> Iterator[Callable[..., Any]]:
    """``make(ae_title="ECHOSCP", max_pdu=4096, status=0)``."""
    require_module("pynetdicom")
    from peers.pynetdicom_scp import EchoScp

    started: list[EchoScp] = []

    def make(**kwargs: Any) -> EchoScp:
        scp = EchoScp(**kwargs)
        started.append(scp)
        scp.start()
        return scp

    try:
        yield make
    finally:
        for scp in started:
            scp.stop()


@pytest.fixture
def pynetdicom_find_scp_factory() -> Iterator[Callable[..., Any]]:
    """``make(datasets, responder=None, delay=0.0, final_status=0, ae_title="FINDSCP",
    max_pdu=16384)`` -> a started :class:`peers.pynetdicom_scp.FindScp`."""
    require_module("pynetdicom")
    from peers.pynetdicom_scp import FindScp

    started: list[FindScp] = []

    def make(datasets: Any = (), **kwargs: Any) -> FindScp:
        scp = FindScp(datasets, **kwargs)
        started.append(scp)
        scp.start()
        return scp

    try:
        yield make
    finally:
        for scp in started:
            scp.stop()

"""The command line without a peer: help of every subcommand, usage errors as one line with
exit code 2, ``-k`` parsing, and the message when the extra ``cli`` is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from peers.aiodicom_cli import ROOT, aiodicom, cli_env
from pydicom import Dataset

from aiodicom.cli.keys import parse_key

HELP = {
    "echo": ["HOST|NAME", "PORT", "-aet", "-aec", "--connect-timeout", "--acse-timeout",
             "--dimse-timeout", "--max-pdu", "--tls-cert", "--tls-key", "--tls-ca", "-v", "-d",
             "-q", "exit codes"],
    "find": ["-P", "-S", "-O", "-W", "-L", "-k", "-f", "--json", "--output", "--cancel-after",
             "--relational", "--fuzzy", "--datetime", "--timezone", "exit codes"],
    "move": ["-k", "-L", "--dest", "--our-port", "--output", "exit codes"],
    "get": ["-k", "-L", "--output", "exit codes"],
    "store": ["FILE_OR_DIR", "-aec", "--tls-ca", "--commit", "--commit-timeout", "--our-port",
              "exit codes"],
    "storescp": ["--output", "--listen-host"],
    "qrscp": ["--move-dest", "--synthetic"],
    "demo": ["--host", "--our-port"],
}


@pytest.mark.parametrize("command", sorted(HELP))
def test_help_of_each_subcommand_is_complete(command: str) -> None:
    done = aiodicom(command, "--help")
    assert done.returncode == 0, done.stderr
    for option in HELP[command]:
        assert option in done.stdout, option


def test_top_level_help_lists_commands_and_exit_codes() -> None:
    done = aiodicom("--help")
    assert done.returncode == 0
    for text in ("echo", "find", "move", "get", "store", "storescp", "qrscp", "demo",
                 "peers.toml", "4    association refused", "5    network error"):
        assert text in done.stdout


def test_sequence_paths_and_tags() -> None:
    ds = Dataset()
    parse_key(ds, "ReferencedStudySequence[0].ReferencedSOPInstanceUID=1.2.3")
    parse_key(ds, "0010,0020=ID1")
    parse_key(ds, "StudyDate")
    parse_key(ds, "ScheduledProcedureStepSequence")
    assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2.3"
    assert ds.PatientID == "ID1" and ds.StudyDate in ("", None)
    assert len(ds.ScheduledProcedureStepSequence) == 0


@pytest.mark.parametrize(("args", "message"), [
    (["find", "127.0.0.1", "104", "-k", "PatientIdd=1"], "no such DICOM keyword"),
    (["find", "127.0.0.1", "104", "-k", "PatientID.Foo=1"], "is not a sequence"),
    (["find", "127.0.0.1", "104", "-f", "/nonexistent.json"], "cannot read the query file"),
    (["echo", "127.0.0.1", "notaport"], "is not a number"),
    (["echo", "nosuchpeer"], "not a peer named"),
    (["echo", "127.0.0.1", "104", "--tls-ca", "/nonexistent.pem"], "cannot load the TLS files"),
    (["echo", "127.0.0.1", "104", "--tls-key", "k.pem"], "--tls-key needs --tls-cert"),
])
def test_usage_errors_are_one_line_with_code_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = aiodicom(*args, env={"AIODICOM_PEERS": str(tmp_path / "none.toml")})
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["find", "127.0.0.1", "104", "--fuzy"], "--fuzzy"),  # (suggested)
    (["find"], "Missing argument 'HOST|NAME'"),
    (["find", "h", "1", "-L", "FRAME"], "'FRAME' is not one of"),
    (["find", "h", "1", "--json", "-o", "out"], "give --json or -o/--output, not both"),
    (["find", "h", "1", "--cancel-after", "0"], "--cancel-after"),
    (["fnd", "h", "1"], "No such command 'fnd'"),
    (["qrscp", "99999", "."], "99999 is not in the range"),
    (["store", "127.0.0.1", "104"], "name the files or directories to send"),
])
def test_click_usage_errors_are_one_line_naming_the_help(args: list[str], message: str) -> None:
    done = aiodicom(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    if "--json" not in args and args[0] != "store":  # (errors of the command's own checks)
        assert "--help'" in done.stderr


def test_no_command_prints_the_help_with_code_2() -> None:
    done = aiodicom()
    assert done.returncode == 2
    assert "Commands:" in done.stdout and "qrscp" in done.stdout


def test_query_file_dicom_json(tmp_path: Path) -> None:
    from aiodicom.cli.app import parse
    from aiodicom.cli.keys import build_query

    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = "1.2.3"
    ds.Modality = "CT"
    (tmp_path / "q.json").write_text(__import__("json").dumps(ds.to_json_dict()))
    args = parse(["find", "h", "1", "-f", str(tmp_path / "q.json"), "-k", "Modality=MR"])
    query = build_query(args)
    assert query.level is not None and query.level.value == "SERIES"
    assert query.keys["StudyInstanceUID"] == "1.2.3" and query.keys["Modality"] == "MR"


def test_without_rich_or_click_the_cli_names_the_extra() -> None:
    blocker = "import sys; sys.modules['rich'] = None; from aiodicom.__main__ import main; "
    find = subprocess.run(
        [sys.executable, "-c", blocker + "sys.exit(main(['find', 'h', '1']))"],
        capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=60, check=False,
    )
    assert find.returncode == 2
    assert "pip install 'aiodicom[cli]'" in find.stderr
    demo = subprocess.run(
        [sys.executable, "-c", blocker + "sys.exit(main(['demo', '--help']))"],
        capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=60, check=False,
    )
    assert demo.returncode == 0 and "--our-port" in demo.stdout
    without_click = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['click'] = None; "
         "from aiodicom.__main__ import main; sys.exit(main(['echo', 'h', '1']))"],
        capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=60, check=False,
    )
    assert without_click.returncode == 2
    assert "pip install 'aiodicom[cli]'" in without_click.stderr


def test_worklist_query_with_a_sequence_path() -> None:
    from aiodicom.cli.app import parse
    from aiodicom.cli.keys import build_query

    args = parse([
        "find", "h", "1", "-W", "-k", "PatientID=P1",
        "-k", "ScheduledProcedureStepSequence[0].Modality=CT",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20240101",
    ])
    query = build_query(args)
    assert query.level is None and query.model.value == "Modality Worklist"
    step = query.keys["ScheduledProcedureStepSequence"]
    assert step["Modality"] == "CT"  # type: ignore[index]
    with pytest.raises(Exception, match="no level"):
        build_query(parse(["find", "h", "1", "-W", "-L", "STUDY"]))


def test_peers_toml_is_read_on_every_supported_python(tmp_path: Path) -> None:
    """tomllib on 3.11+, tomli (the extra 'cli') on 3.10: the named peer's address is used (a
    closed port: a network error, exit 5), a broken file is a usage error naming it."""
    from peers import free_port

    config = tmp_path / "peers.toml"
    config.write_text(f'[mypacs]\nhost = "127.0.0.1"\nport = {free_port()}\n'
                      'ae_title = "PACS"\nmethod = "get"\n')
    env = {"AIODICOM_PEERS": str(config)}
    done = aiodicom("echo", "mypacs", "--connect-timeout", "5", env=env)
    assert done.returncode == 5, done.stderr
    assert "cannot connect" in done.stderr
    config.write_text("[mypacs\nhost = ")
    broken = aiodicom("echo", "mypacs", env=env)
    assert broken.returncode == 2
    assert f"cannot read {config}" in broken.stderr and "Traceback" not in broken.stderr


def test_without_a_toml_reader_peers_toml_names_the_extra(tmp_path: Path) -> None:
    config = tmp_path / "peers.toml"
    config.write_text('[mypacs]\nhost = "127.0.0.1"\nport = 104\n')
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['tomllib'] = sys.modules['tomli'] = None;"
         " from aiodicom.__main__ import main; sys.exit(main(['echo', 'mypacs']))"],
        capture_output=True, text=True, cwd=ROOT, env=cli_env({"AIODICOM_PEERS": str(config)}),
        timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "needs tomli: pip install 'aiodicom[cli]'" in done.stderr

"""The query of a command line: ``-k Keyword=value`` options (sequence paths such as
``ReferencedStudySequence[0].ReferencedSOPInstanceUID=``, or tags ``0010,0020=``), an optional
query file (DICOM or DICOM JSON), the level and the model, as a :class:`~aiodicom.Query`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence

from aiodicom.cli.common import Args, CliError
from aiodicom.cli.params import option, stack
from aiodicom.errors import QueryError
from aiodicom.model import QueryModel
from aiodicom.query import Query

__all__ = ["MODELS", "build_query", "parse_key", "query_options"]

MODELS = {"P": QueryModel.PATIENT_ROOT, "S": QueryModel.STUDY_ROOT,
          "O": QueryModel.PATIENT_STUDY_ONLY, "W": QueryModel.WORKLIST}

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")

F = TypeVar("F", bound=Callable[..., Any])

_STEP = re.compile(r"^(?P<name>[A-Za-z0-9]+|\(?[0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)?)"
                   r"(?:\[(?P<item>\d+)\])?$")


def query_options(*, worklist: bool = True) -> Callable[[F], F]:
    """``-P/-S/-O[/-W]``, ``-L``, ``-k`` and ``-f``, which :func:`build_query` reads."""
    models: list[tuple[str, str, str, str]] = [
        ("-P", "--patient", "P", "Patient Root information model"),
        ("-S", "--study", "S", "Study Root information model (default)"),
        ("-O", "--psonly", "O", "Patient/Study Only information model"),
    ]
    if worklist:
        models.append(("-W", "--worklist", "W", "Modality Worklist (no level)"))
    decorators = [
        option(short, long, "model", flag_value=value, section="query", help=text)
        for short, long, value, text in models
    ]
    decorators += [
        option("-L", "--level", type=click.Choice(LEVELS, case_sensitive=False), section="query",
               help="the Query/Retrieve level (default: the query file's, else STUDY)"),
        option("-k", "--key", "keys", multiple=True, metavar="KEY[=VALUE]", section="query",
               help="a matching key (Keyword=value), or a return key (Keyword or Keyword=); a "
                    "keyword, a tag gggg,eeee, or a path Seq[0].Keyword=value; repeatable, "
                    "wins over the query file"),
        option("-f", "--query-file", type=click.Path(path_type=Path), metavar="FILE",
               section="query",
               help="the identifier as a DICOM file or DICOM JSON (PS3.18 F.2)"),
    ]
    return stack(decorators)


def _tag(name: str) -> int:
    text = name.strip("()")
    if "," in text:
        group, element = text.split(",")
        return int(group, 16) << 16 | int(element, 16)
    tag = tag_for_keyword(text)
    if tag is None:
        raise CliError(f"-k {name}: no such DICOM keyword; check its spelling "
                       "(e.g. PatientID, StudyDate) or give the tag as gggg,eeee")
    return int(tag)


def parse_key(ds: Dataset, text: str) -> None:
    """Set one ``-k`` key into ``ds`` (items of sequences created as needed)."""
    path, _, value = text.partition("=")
    steps = path.strip().split(".")
    target = ds
    for index, step in enumerate(steps):
        found = _STEP.match(step)
        if not found:
            raise CliError(f"-k {text}: {step!r} is neither a keyword, a tag gggg,eeee nor "
                           "Sequence[n]")
        tag = _tag(found["name"])
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            raise CliError(f"-k {text}: {found['name']} is not in the DICOM dictionary; "
                           "private tags cannot be query keys") from None
        last = index == len(steps) - 1
        if vr == "SQ":
            if tag not in target:
                target.add_new(tag, "SQ", DicomSequence())
            items = target[tag].value
            wanted = int(found["item"] or 0)
            if last:
                if value:
                    raise CliError(f"-k {text}: a sequence takes no value; give its keys as "
                                   f"{found['name']}[0].Keyword=value")
                continue  # an empty sequence: asked for, whole
            while len(items) <= wanted:
                items.append(Dataset())
            target = items[wanted]
        elif not last:
            raise CliError(f"-k {text}: {found['name']} is not a sequence ({vr})")
        else:
            target.add_new(tag, vr, _value(vr, value))


def _value(vr: str, value: str) -> object:
    if value == "":
        return None  # a return key: asked for without matching on it
    if vr in ("US", "SS", "UL", "SL", "IS"):
        return [int(v) for v in value.split("\\")] if "\\" in value else int(value)
    if vr in ("FL", "FD", "DS"):
        return [float(v) for v in value.split("\\")] if "\\" in value else value
    return value


def read_query_file(path: Path) -> Dataset:
    """A query file: DICOM JSON (an object, or an array of one) or a DICOM file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the query file {path}: {exc.strerror}") from exc
    if raw.lstrip()[:1] in (b"{", b"["):
        try:
            data = json.loads(raw)
            if isinstance(data, list):
                if len(data) != 1:
                    raise CliError(f"{path}: a DICOM JSON query file holds one data set")
                data = data[0]
            return Dataset.from_json(data)
        except (ValueError, TypeError, KeyError) as exc:
            raise CliError(f"{path}: not DICOM JSON (PS3.18 F.2): {exc}") from exc
    try:
        return dcmread(path, force=True)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise CliError(f"{path}: not a DICOM file: {exc}") from exc


def build_query(args: Args, *, default_model: str = "S") -> Query:
    """The query the options describe; required return keys are added (the UIDs a table, a
    move or a get needs)."""
    ds = read_query_file(args.query_file) if args.query_file else Dataset()
    for text in args.keys:
        parse_key(ds, text)
    model = MODELS[args.model or default_model]
    keys = Dataset()
    for elem in ds:
        if elem.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") \
                or elem.tag.group == 0x0002:
            continue
        if not keyword_for_tag(elem.tag):
            raise CliError(f"{elem.tag}: private or unknown elements cannot be query keys")
        keys.add(elem)
    character_set = ds.get("SpecificCharacterSet") or None
    if isinstance(character_set, (list, tuple)) or (
        character_set is not None and not isinstance(character_set, str)
    ):
        character_set = "\\".join(str(v) for v in character_set)
    try:
        if model is QueryModel.WORKLIST:
            if args.level:
                raise CliError("-W (worklist) has no level: leave out -L")
            identifier = keys
            return Query.from_dataset(_with_charset(identifier, character_set), model,
                                      required_keys=True)
        level = args.level or str(ds.get("QueryRetrieveLevel") or "STUDY").strip()
        if args.model is None and level == "PATIENT":
            model = QueryModel.PATIENT_ROOT  # Study Root has no PATIENT level
        keys.QueryRetrieveLevel = level
        return Query.from_dataset(_with_charset(keys, character_set), model,
                                  required_keys=True)
    except QueryError as exc:
        raise CliError(f"the query cannot be sent: {exc}") from exc


def _with_charset(ds: Dataset, character_set: str | None) -> Dataset:
    if character_set:
        ds.SpecificCharacterSet = character_set
    return ds

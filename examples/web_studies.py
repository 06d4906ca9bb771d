"""An async web endpoint: ``GET /studies?PatientID=...`` streams C-FIND matches as DICOM JSON.

    pip install 'aiodicom[web]' uvicorn
    PACS=127.0.0.1:11112:PACS uvicorn examples.web_studies:app

Each match is written to the response as soon as the PACS sends it (PS3.18 F.2 JSON, from
pydicom's ``Dataset.to_json_dict``): nothing waits for the whole result, and a client that
goes away stops the C-FIND (C-CANCEL) when the response's generator is closed.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import aiodicom
from aiodicom import Query

# Study attributes asked for besides the Patient ID (return keys: empty values).
RETURN_KEYS = ("PatientName", "StudyDate", "StudyDescription", "ModalitiesInStudy")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    host, port, ae_title = os.environ.get("PACS", "127.0.0.1:11112:PACS").split(":")
    async with aiodicom.Client(os.environ.get("OUR_AE", "AIOWEB")) as client:
        app.state.pacs = client.peer(host, int(port), ae_title)
        yield


async def studies(request: Request) -> Response:
    keys: dict[str, object] = dict.fromkeys(RETURN_KEYS)
    keys.update(request.query_params)  # e.g. PatientID=..., StudyDate=20240101-20240131
    try:
        query = Query.study(**keys)
    except aiodicom.QueryError as exc:  # an unknown keyword, a malformed date...
        return PlainTextResponse(str(exc), status_code=400)
    pacs: aiodicom.Peer = request.app.state.pacs

    async def body() -> AsyncIterator[str]:
        separator = "["
        async with pacs.find(query) as matches:
            async for match in matches:
                yield separator + json.dumps(match.to_json_dict())
                separator = ","
        yield "]" if separator == "," else "[]"

    return StreamingResponse(body(), media_type="application/dicom+json")


app = Starlette(routes=[Route("/studies", studies)], lifespan=lifespan)

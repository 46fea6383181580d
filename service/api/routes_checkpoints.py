"""/v1/checkpoints: the outputs of succeeded jobs (ledger, report, adapter, and the merged checkpoint when a
job asked for one), listed and downloaded file by file or as one tar.gz."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse

from suture.service.api.auth import Caller, State, sees
from suture.service.jobs.outputs import output_dir
from suture.service.schemas import CheckpointView, ErrorBody
from suture.service.store.jobs import as_utc

router = APIRouter(prefix="/v1/checkpoints", tags=["checkpoints"])
ERRORS = {401: {"model": ErrorBody, "description": "missing or invalid token"},
          404: {"model": ErrorBody, "description": "no such checkpoint or file visible to this token"},
          409: {"model": ErrorBody, "description": "(admins) several tokens' checkpoints have this name: give the "
                                                   "job id instead"}}


def _view(row, root: Path) -> CheckpointView | None:
    directory = output_dir(root, row.owner_id, row.output_name, row.id)
    if not directory.is_dir():
        return None
    files = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    return CheckpointView(name=row.output_name, job_id=row.id, model=row.model, created_at=as_utc(row.finished_at
                          or row.created_at), files=files, has_checkpoint=(directory / "checkpoint").is_dir(),
                          has_adapter=(directory / "adapter").is_dir())


def _find(st, caller, name: str):
    """The caller's checkpoint `name`; else the checkpoint of the job whose id is `name` (ids are unique across
    tokens, so an admin can reach every one); else, for an admin, the one token's checkpoint of that name."""
    row = st.jobs.by_output(name, caller.id) or st.jobs.row(name)
    if row is None and caller.admin:
        holders = st.jobs.holders_of(name)
        if len(holders) > 1:
            raise HTTPException(status.HTTP_409_CONFLICT, f"checkpoint name {name!r} is used by several tokens' "
                                f"jobs; address it by job id: {', '.join(r.id for r in holders)}")
        row = holders[0] if holders else None
    if row is None or row.status != "succeeded" or not sees(caller, row.owner_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no checkpoint {name!r}")
    view = _view(row, st.settings.artifacts_dir)
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"checkpoint {name!r} has no files on this server")
    return view, output_dir(st.settings.artifacts_dir, row.owner_id, row.output_name, row.id)


@router.get("", response_model=list[CheckpointView], responses={401: ERRORS[401]})
async def list_checkpoints(caller: Caller, st: State) -> list[CheckpointView]:
    rows = await run_in_threadpool(st.jobs.succeeded_outputs, None if caller.admin else caller.id)
    views = [_view(r, st.settings.artifacts_dir) for r in rows]
    return [v for v in views if v is not None]


@router.get("/{name}", response_model=CheckpointView, responses=ERRORS)
async def get_checkpoint(name: str, caller: Caller, st: State) -> CheckpointView:
    return (await run_in_threadpool(_find, st, caller, name))[0]


@router.get("/{name}/files/{path:path}", response_class=FileResponse,
            responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}, "description": "the file"}})
async def download_file(name: str, path: str, caller: Caller, st: State) -> FileResponse:
    view, directory = await run_in_threadpool(_find, st, caller, name)
    if path not in view.files:  # also rules out ../ escapes: only listed files are served
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"checkpoint {name!r} has no file {path!r}")
    return FileResponse(directory / path, filename=Path(path).name)


@router.get("/{name}/archive", responses={**ERRORS, 200: {"content": {"application/gzip": {}},
                                                           "description": "a tar.gz of the chosen part"}})
async def download_archive(name: str, caller: Caller, st: State,
                           part: Literal["all", "checkpoint", "adapter"] = "all") -> StreamingResponse:
    """`part=checkpoint`: the merged model (stock `from_pretrained` loads it); `adapter`: the PEFT adapter."""
    view, root = await run_in_threadpool(_find, st, caller, name)
    base = root if part == "all" else root / part
    if not base.is_dir():
        hint = " (submit the job with save_checkpoint: true)" if part == "checkpoint" else ""
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"checkpoint {name!r} has no {part}{hint}")

    def chunks():
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w|gz") as tar:
            for file in sorted(p for p in base.rglob("*") if p.is_file()):
                tar.add(file, arcname=f"{view.name}/{file.relative_to(root)}")
                if buffer.tell() > 1 << 20:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    filename = f"{name}.tar.gz" if part == "all" else f"{name}-{part}.tar.gz"
    return StreamingResponse(chunks(), media_type="application/gzip",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})

"""Measured what-ifs for the hot paths the benchmarks found (``python -m benchmarks
--experiments``). Nothing here is used by the library; each class shows, with numbers, what a
proposed change to ``aiodicom/`` would buy, so that the change can be judged before it is made.
"""

from __future__ import annotations

from pathlib import Path

from aiodicom.fileio import write_part10_atomic
from aiodicom.instance import Instance
from aiodicom.sinks import DirectorySink, _path_uid, default_layout


class CachedDirectorySink(DirectorySink):
    """DirectorySink whose per-instance path work is done once per series directory.

    The library's ``_target`` resolves the whole target path (``Path.resolve``: an ``lstat``
    per component) and calls ``mkdir(parents=True, exist_ok=True)`` for every instance. With
    the default layout every component is a validated UID (digits and dots, no separator, no
    ``..``), so the checks only need doing the first time a (study, series) directory is seen.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._dirs: dict[tuple[str | None, str | None], Path] = {}

    def _target(self, instance: Instance) -> Path:
        study, series = instance.peek_uids()
        directory = self._dirs.get((study, series))
        if directory is None:
            directory = super()._target(instance).parent  # every check, once per directory
            directory.mkdir(parents=True, exist_ok=True)
            self._dirs[(study, series)] = directory
        return directory / (_path_uid("SOP Instance UID", instance.sop_instance_uid) + ".dcm")

    async def __call__(self, instance: Instance) -> None:
        target = self._target(instance)
        write_part10_atomic(target, instance, fsync=self.fsync)
        self.paths[instance.sop_instance_uid] = target


assert default_layout  # the layout the cache above relies on

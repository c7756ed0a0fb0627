"""Writing an output folder without ever losing a user's files.

``check_output`` runs before any work: the output may not be the input, lie inside it or contain
it, and ``overwrite`` replaces only a folder that is a vlmforge export (its manifest says so) —
never a user's folder that happens to have the same name. ``write_atomically`` fills a hidden
sibling ``.NAME.tmp-PID`` and renames it into place only when complete; an error, Ctrl-C or
SIGTERM (turned into KeyboardInterrupt while the folder is written, unless the program handles
SIGTERM itself) removes it, and a temporary folder left by a killed run (SIGKILL, power loss) is
removed by the next run into the same target.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import threading
from pathlib import Path

from ..runtime.errors import VlmforgeError
from ..runtime.manifest import FORMAT, MANIFEST_NAME


class FolderError(VlmforgeError):
    """The output folder would overwrite, nest in or delete something it must not."""


def is_vlmforge_export(folder: Path) -> bool:
    """A folder whose manifest.json declares the vlmforge manifest format."""
    path = Path(folder) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def check_output(inputs: list[Path], out: Path, overwrite: bool, flag: str = "-o") -> None:
    """Refuse an output that would write into, over or around any of ``inputs``."""
    target = out.resolve()
    for src in inputs:
        src = Path(src).resolve()
        if target == src:
            raise FolderError(f"{flag} {out} is the input folder; write to a new folder")
        if src in target.parents:
            raise FolderError(f"{flag} {out} is inside the input folder {src}; write outside it")
        if target in src.parents:
            raise FolderError(f"{flag} {out} contains the input {src}; replacing it would delete the input — "
                              "write to a folder of its own")
    if out.is_symlink():
        raise FolderError(f"{flag} {out} is a symbolic link; give the real folder (or a new name)")
    if not out.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{out} already exists; remove it or pass overwrite=True (--overwrite)")
    if not out.is_dir() or not is_vlmforge_export(out):
        raise FolderError(f"{out} exists and is not a vlmforge export (no manifest.json of format {FORMAT!r}); "
                          "--overwrite only replaces an earlier export — move it away or choose another folder")


def write_atomically(out: Path, fill):
    """``fill(tmp)`` writes a sibling temporary folder, renamed to ``out`` only when complete."""
    out = Path(out)
    remove_stale(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise FolderError(f"cannot create the output folder {out} ({e.strerror}: {e.filename}); "
                          "choose a folder you can write to") from None
    try:
        with _sigterm_unwinds():
            result = fill(tmp)
            _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM raises KeyboardInterrupt meanwhile, so the ``except`` above cleans up (main thread, default handler only)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _replace(tmp: Path, out: Path) -> None:
    """Move an earlier export aside, the new one in, then delete the old: at every instant one of
    them is complete on disk."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)  # put the earlier export back
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_stale(out: Path) -> list[Path]:
    """Delete ``.NAME.tmp-PID`` / ``.NAME.old-PID`` siblings whose process is gone; returns them.
    An earlier export moved aside (``.old``) by a run killed before its replacement landed is put back."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(tmp|old)-(\d+)$")
    removed = []
    if not out.parent.is_dir():
        return removed
    for entry in out.parent.iterdir():
        m = pattern.match(entry.name)
        if m and entry.is_dir() and not entry.is_symlink() and not _alive(int(m.group(2))):
            if m.group(1) == "old" and not out.exists():
                entry.rename(out)
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours from an earlier call in this process: it ended
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True

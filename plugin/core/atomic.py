"""Outputs appear whole or not at all.

Every output is first written to a hidden temporary file beside its target. A run's
outputs are committed together: the previous files at the targets are kept aside until
every new file is in place, and put back if any rename fails. Temporary files are removed
on error, on cancel, on SIGTERM/SIGINT, and, after a SIGKILL, by the next run that writes
into the same folder (the temp name carries the writing process id).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import socket
import threading
import uuid
from typing import Iterable, List, Sequence, Tuple

from .errors import InputError

_TEMP_NAME = re.compile(r"^\..+\.skyclear-([A-Za-z0-9_]+)-(\d+)-[0-9a-f]{8}\.(part|keep)(\.[A-Za-z0-9]+)?(\.aux\.xml)?$")
# the writing host: on a cluster sharing a folder, a pid means nothing on another machine
HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"
_active: set = set()
_lock = threading.Lock()


def temp_path(path: str, kind: str = "part") -> str:
    """A hidden sibling of ``path`` that names this host and process, e.g.
    ``.out.tif.skyclear-node1-42-1a2b3c4d.part.tif``."""
    folder, name = os.path.split(os.path.abspath(path))
    ext = os.path.splitext(name)[1]
    return os.path.join(folder, f".{name}.skyclear-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}{ext}")


def register(path: str) -> None:
    with _lock:
        _active.add(path)


def unregister(path: str) -> None:
    with _lock:
        _active.discard(path)


def remove(path: str) -> None:
    for p in (path, path + ".aux.xml"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)
    unregister(path)


def remove_active() -> None:
    """Remove every temporary file this process is still writing (signal and exit paths)."""
    with _lock:
        paths = list(_active)
    for path in paths:
        with contextlib.suppress(OSError):
            remove(path)


atexit.register(remove_active)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(folder: str) -> List[str]:
    """Remove SkyClear temporary files left in ``folder`` by processes of this host that no
    longer run (other hosts' files are left alone: their processes cannot be checked from here)."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _TEMP_NAME.match(name)
        if match and match.group(1) == HOST and not _alive(int(match.group(2))):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed


def same_file(a: str, b: str) -> bool:
    a, b = os.path.realpath(a), os.path.realpath(b)
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_paths(outputs: Sequence[Tuple[str, str]], inputs: Iterable[Tuple[str, str]]) -> None:
    """Refuse two outputs at one path, and an output that would overwrite an input.

    ``outputs`` and ``inputs`` are (label, path) pairs.
    """
    outputs = list(outputs)
    for i, (label_a, path_a) in enumerate(outputs):
        for label_b, path_b in outputs[i + 1:]:
            if same_file(path_a, path_b):
                raise InputError(f"{label_a} and {label_b} are the same file ({path_a}); "
                                 "give each output its own path")
    for out_label, out_path in outputs:
        for in_label, in_path in inputs:
            if in_path and same_file(out_path, in_path):
                raise InputError(f"{out_label} {out_path} is the {in_label} input: writing it would destroy "
                                 "the input. Choose another output path")


def commit(pairs: Sequence[Tuple[str, str]]) -> None:
    """Move each finished temporary file onto its target, all or none.

    Existing targets are renamed aside first; if any step fails, the new files are removed
    and the old ones restored, so a failed commit leaves the folder as it was.
    """
    kept: List[Tuple[str, str]] = []    # (target, its previous file kept aside)
    placed: List[str] = []
    try:
        for _, target in pairs:
            if os.path.lexists(target):
                aside = temp_path(target, "keep")
                os.replace(target, aside)
                kept.append((target, aside))
        for tmp, target in pairs:
            os.replace(tmp, target)
            unregister(tmp)
            placed.append(target)
    except BaseException:
        for target in placed:
            with contextlib.suppress(OSError):
                os.remove(target)
        for target, aside in kept:
            with contextlib.suppress(OSError):
                os.replace(aside, target)
        for tmp, _ in pairs:
            with contextlib.suppress(OSError):
                remove(tmp)
        raise
    for target, aside in kept:
        with contextlib.suppress(OSError):
            os.remove(aside)
    for tmp, target in pairs:
        with contextlib.suppress(FileNotFoundError):
            os.remove(target + ".aux.xml")  # statistics of the previous file
        with contextlib.suppress(FileNotFoundError):
            os.replace(tmp + ".aux.xml", target + ".aux.xml")  # metadata GDAL kept beside the new one


@contextlib.contextmanager
def cleanup_on_signals(signals=(signal.SIGTERM, signal.SIGINT)):
    """While the block runs, a SIGTERM/SIGINT first removes this process's temporary files,
    then is handled as it would have been (the process still ends). Main thread only;
    elsewhere the stale-file sweep of the next run cleans up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, frame):
        remove_active()
        old = previous[signum]
        signal.signal(signum, old if old is not None else signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for sig in signals:
        if signal.getsignal(sig) == signal.SIG_IGN:
            # ignored by the parent (nohup, `cmd &` in a script): the signal will not end the
            # run, so removing the temporary files would only make it fail at the end
            continue
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)

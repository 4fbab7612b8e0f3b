"""Legacy and OpenDocument office files to their modern equivalents, with LibreOffice.

Each conversion is its own `soffice --headless` process with its own throwaway profile
(LibreOffice lets one process per profile run, so conversions sharing the default profile
wait on each other or fail), in its own process group, killed whole past its time limit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ingest.models import ParseError

# What each format becomes before unstructured reads it.
CONVERSIONS = {
    ".doc": ".docx",
    ".dot": ".docx",
    ".ppt": ".pptx",
    ".pps": ".pptx",
    ".pot": ".pptx",
    ".xls": ".xlsx",
    ".xlt": ".xlsx",
    ".odp": ".pptx",
    ".ods": ".xlsx",
}


def soffice() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def convert(path: Path, name: str, workdir: Path, timeout_s: float) -> Path:
    """`path` converted into `workdir` (which the caller removes), as `CONVERSIONS` says.

    Raises:
        ParseError: `unsupported_here` without LibreOffice, `timeout` past `timeout_s`,
            `unreadable` when LibreOffice makes nothing of the file.
    """
    binary = soffice()
    if binary is None:
        raise ParseError(
            "unsupported_here",
            f"{name}: {path.suffix} files are unsupported here: needs LibreOffice (soffice), "
            "which is not installed",
            status=415,
        )
    target = CONVERSIONS[path.suffix.lower()]
    # A plain name: LibreOffice misreads some characters in paths (a colon, a leading dash).
    source = workdir / f"input{path.suffix.lower()}"
    shutil.copyfile(path, source)
    profile = workdir / "profile"
    command = [
        binary,
        f"-env:UserInstallation={profile.as_uri()}",
        "--headless",
        "--norestore",
        "--nologo",
        "--nolockcheck",
        "--convert-to",
        target.lstrip("."),
        "--outdir",
        str(workdir / "out"),
        str(source),
    ]
    env = {**os.environ, "HOME": str(workdir)}  # nothing of LibreOffice's lands in $HOME
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ParseError(
            "timeout",
            f"{name}: LibreOffice took longer than {timeout_s:g} s to convert it "
            "(QUARRY_CONVERT_TIMEOUT_S)",
        ) from exc
    finally:
        _kill_group(process)  # also on a timeout; soffice.bin may outlive the launcher
    converted = workdir / "out" / f"input{target}"
    if not converted.is_file() or converted.stat().st_size == 0:
        said = output.decode("utf-8", "replace").strip().splitlines()[-1:] if output else []
        raise ParseError(
            "unreadable",
            f"{name}: LibreOffice could not convert it to {target}"
            + (f" ({said[0][:200]})" if said else ""),
            suspect=True,
        )
    return converted


def _kill_group(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGKILL the conversion's whole process group and return once it is gone (a killed
    soffice.bin, reparented when its launcher dies, takes a moment to exit on a loaded
    machine; its files in the work folder must not be in use when that is removed)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)  # anyone left in the group?
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)

"""Read DICOM series straight from zip archives (e.g. 3D-IRCADb's ``PATIENT_DICOM.zip``).

The members of one folder are extracted into a private temporary folder, read with
:func:`livseg_pipeline.io.image_io.read_dicom_series` and the folder is removed again. Member names are
never used as paths (no zip-slip): every member is written under a generated name, and only regular
files are extracted, with a cap on the uncompressed size.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from livseg_pipeline.io.image_io import Image, ImageReadError, read_dicom_series

#: Refuse archives whose selected members would expand beyond this (zip bombs, wrong file).
MAX_EXTRACT_BYTES = 8 * 1024 ** 3
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def _member_dir(name: str) -> str:
    """Folder of a member inside the archive, POSIX style, '' for the root."""
    parent = PurePosixPath(name.replace("\\", "/")).parent.as_posix()
    return "" if parent == "." else parent.strip("/")


def _open(zip_path: Path) -> zipfile.ZipFile:
    if not zip_path.exists():
        raise ImageReadError(f"{zip_path}: no such file")
    try:
        return zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise ImageReadError(f"{zip_path}: not a readable zip archive ({e})") from None
    except OSError as e:
        raise ImageReadError(f"{zip_path}: cannot open ({e.strerror or e})") from None


def _file_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    out = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        mode = (info.external_attr >> 16) & 0o170000
        if mode and mode != 0o100000:          # symlinks, devices: never extracted
            continue
        base = PurePosixPath(info.filename.replace("\\", "/")).name
        if base.startswith(".") or base.upper() in ("DICOMDIR", "THUMBS.DB"):
            continue
        out.append(info)
    return out


def list_zip_folders(zip_path: str | Path) -> dict[str, int]:
    """Folders inside the archive that hold files, with their file counts (``''`` = archive root).

    >>> import io, zipfile, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.zip"
    >>> with zipfile.ZipFile(p, "w") as z:
    ...     z.writestr("MASKS_DICOM/liver/image_0", b"x"); z.writestr("MASKS_DICOM/liver/image_1", b"x")
    >>> list_zip_folders(p)
    {'MASKS_DICOM/liver': 2}
    """
    zip_path = Path(zip_path)
    with _open(zip_path) as zf:
        counts: dict[str, int] = {}
        for info in _file_members(zf):
            folder = _member_dir(info.filename)
            counts[folder] = counts.get(folder, 0) + 1
    return dict(sorted(counts.items()))


def _choose_folder(zip_path: Path, folders: dict[str, int], subfolder: str | None) -> str:
    if not folders:
        raise ImageReadError(f"{zip_path}: archive holds no files")
    if subfolder is None:
        if len(folders) == 1:
            return next(iter(folders))
        listing = ", ".join(f"{k or '.'} ({v} files)" for k, v in folders.items())
        raise ImageReadError(f"{zip_path}: holds {len(folders)} folders with files, choose one: {listing}")
    want = subfolder.replace("\\", "/").strip("/")
    if want in folders:
        return want
    # Accept the folder's tail ('liver' for 'MASKS_DICOM/liver'), case-insensitively, if unambiguous.
    hits = [k for k in folders if k.lower() == want.lower() or k.lower().endswith("/" + want.lower())]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(k or "." for k in folders)
    why = "is ambiguous" if hits else "not found"
    raise ImageReadError(f"{zip_path}: folder {subfolder!r} {why}; folders: {listing}")


@contextlib.contextmanager
def extracted_zip_folder(zip_path: str | Path, subfolder: str | None = None) -> Iterator[Path]:
    """Extract the files of one folder of the archive into a temporary folder (removed afterwards).

    Files get generated names (``000000_<sanitised base name>``); the member names are never used as
    paths, so ``../`` or absolute names in a malicious archive cannot escape the folder.
    """
    zip_path = Path(zip_path)
    tmp = Path(tempfile.mkdtemp(prefix="lvs_zip_"))
    try:
        with _open(zip_path) as zf:
            members = _file_members(zf)
            folders: dict[str, int] = {}
            for info in members:
                folders[_member_dir(info.filename)] = folders.get(_member_dir(info.filename), 0) + 1
            folder = _choose_folder(zip_path, folders, subfolder)
            chosen = [m for m in members if _member_dir(m.filename) == folder]
            total = sum(m.file_size for m in chosen)
            if total > MAX_EXTRACT_BYTES:
                raise ImageReadError(f"{zip_path}: folder {folder!r} would expand to {total / 1e9:.1f} GB, "
                                     f"more than the {MAX_EXTRACT_BYTES / 1e9:.0f} GB allowed")
            for i, info in enumerate(chosen):
                if info.flag_bits & 0x1:
                    raise ImageReadError(f"{zip_path}: member {info.filename!r} is encrypted")
                base = _SAFE.sub("_", PurePosixPath(info.filename.replace("\\", "/")).name)[:64]
                target = tmp / f"{i:06d}_{base}"
                try:
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                    raise ImageReadError(f"{zip_path}: member {info.filename!r} is corrupt ({e})") from None
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_dicom_zip(zip_path: str | Path, subfolder: str | None = None, series_uid: str | None = None) -> Image:
    """Read the DICOM series stored in folder ``subfolder`` of a zip archive (e.g.
    ``read_dicom_zip('PATIENT_DICOM.zip')`` or ``read_dicom_zip('MASKS_DICOM.zip', 'liver')``).

    Without ``subfolder`` the archive must hold exactly one folder with files. Errors are one-line
    :class:`ImageReadError` messages naming the archive (and folder).
    """
    zip_path = Path(zip_path)
    with extracted_zip_folder(zip_path, subfolder) as folder:
        try:
            img = read_dicom_series(folder, series_uid)
        except ImageReadError as e:
            # Report the archive, not the temporary folder.
            msg = str(e).replace(str(folder), f"{zip_path}:{subfolder or ''}".rstrip(":"))
            raise ImageReadError(msg) from None
    img.source = f"{zip_path}:{subfolder}" if subfolder else str(zip_path)
    return img

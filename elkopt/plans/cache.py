"""Verified .npz entries on disk: the files of the plan-table cache.

An entry is one .npz file of named arrays plus three fields that let a reader trust
it: the format version, the key it was written under (a file copied or renamed onto
another key's name is caught), and a SHA-256 over both and over every array's name,
dtype, shape and bytes. The archive's comment holds a SHA-256 of the whole file, so a
damaged byte is caught also where no zip reader looks. `read_entry` raises
`CorruptEntry` naming what is wrong, so the caller recomputes instead of trusting the
file; `write_entry` replaces a file atomically, so a concurrent reader sees the old
entry or the new one, never half of one. A folder that cannot be used is warned about
once per process, and planning goes on without writing to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Fields stored beside the arrays of an entry.
META_FIELDS = ("format", "key", "checksum")

#: Length of the whole-file digest closing every entry (hex SHA-256, the zip comment).
_FILE_DIGEST_CHARS = 64

# Folders already warned about in this process: one warning per run, not one per table.
_unusable_folders: set[str] = set()


class CorruptEntry(Exception):
    """A cache file is there but cannot be trusted; the message says why."""


def checksum(fmt: int, key: str, arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) over the format, the key and every array's name, dtype, shape and
    bytes, arrays taken in name order."""
    digest = hashlib.sha256(f"{fmt}\n{key}\n".encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name} {array.dtype.str} {array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def read_entry(path: Path, key: str, fmt: int, names: Iterable[str]) -> dict[str, np.ndarray] | None:
    """The arrays `names` of the entry at `path`, verified against `key`, `fmt` and the
    stored checksum. None if there is no entry; raises CorruptEntry if the file is there
    but fails a check."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        _report_folder(path.parent, err)
        return None
    if stat.S_ISDIR(info.st_mode):
        raise CorruptEntry("a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise CorruptEntry("not a regular file")  # np.load on a FIFO would block
    if info.st_size == 0:
        raise CorruptEntry("empty file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CorruptEntry(f"unreadable: {_one_line(err)}") from None
    stored = _read_arrays(raw)
    missing = [name for name in META_FIELDS if name not in stored]
    if missing:
        raise CorruptEntry(f"no {' or '.join(missing)} field")
    found_fmt, found_key, found_sum = (stored.pop(name) for name in META_FIELDS)
    if found_fmt.shape != () or found_fmt.dtype.kind not in "iu" or int(found_fmt) != fmt:
        raise CorruptEntry(f"format {_short(found_fmt)}, expected {fmt}")
    if found_key.shape != () or str(found_key) != key:
        raise CorruptEntry(f"written for key {_short(found_key)}, not {key}")
    names = tuple(names)
    missing = [name for name in names if name not in stored]
    if missing:
        raise CorruptEntry(f"missing array{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if found_sum.shape != () or str(found_sum) != checksum(fmt, key, stored):
        raise CorruptEntry("checksum mismatch")
    if raw[-_FILE_DIGEST_CHARS:] != _file_digest(raw[:-_FILE_DIGEST_CHARS]):
        raise CorruptEntry("file digest mismatch")
    return {name: stored[name] for name in names}


def _read_arrays(raw: bytes) -> dict[str, np.ndarray]:
    """Every array of the .npz `raw`, read now (a damaged member fails here, not later)."""
    if not raw.startswith(b"PK\x03\x04"):  # else np.load tries it as .npy or pickle
        raise CorruptEntry("not an .npz archive")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except Exception as err:  # a damaged archive fails in zipfile, zlib or numpy: any error means unreadable
        raise CorruptEntry(f"unreadable: {type(err).__name__}: {_one_line(err)}") from None


def write_entry(path: Path, key: str, fmt: int, arrays: Mapping[str, np.ndarray]) -> str | None:
    """Store `arrays` as the entry at `path`, replacing whatever is there atomically.

    Returns None once written, else why not. A folder that cannot be created or written
    is warned about once per process and not written to again.
    """
    assert not set(arrays) & set(META_FIELDS), "array names clash with the entry's fields"
    folder = path.parent
    if _folder_id(folder) in _unusable_folders:
        return "the cache folder cannot be written"
    fields = {**arrays, "format": np.int64(fmt), "key": np.array(key),
              "checksum": np.array(checksum(fmt, key, arrays))}
    tmp = None
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as out:
                out.write(_archive(fields))
        except OSError as err:
            _report_folder(folder, err)
            return "the cache folder cannot be written"
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)  # os.replace cannot put a file over a folder
            os.replace(tmp, path)
        except OSError as err:
            return _one_line(err)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)
    return None


def _archive(fields: Mapping[str, np.ndarray]) -> bytes:
    """The .npz bytes of `fields`, closed by a digest of all bytes before it as the zip
    comment (zip readers ignore the comment; the digest covers its length field)."""
    buffer = io.BytesIO()
    np.savez(buffer, **fields)
    body = buffer.getvalue()
    # The end-of-central-directory record closes an archive; its last field is the
    # comment length, 0 as numpy writes it.
    assert body[-22:-18] == b"PK\x05\x06" and body[-2:] == b"\x00\x00", "unexpected .npz layout"
    body = body[:-2] + _FILE_DIGEST_CHARS.to_bytes(2, "little")
    return body + _file_digest(body)


def _file_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).hexdigest().encode()


def remove_entry(path: Path) -> str | None:
    """Delete the entry at `path` (a file or a folder in its place); None once gone, else
    why not."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as err:
        return _one_line(err)
    return None


def _report_folder(folder: Path, err: OSError) -> None:
    name = _folder_id(folder)
    if name in _unusable_folders:
        return
    _unusable_folders.add(name)
    reason = f"{err.strerror}: {err.filename}" if err.strerror and err.filename else _one_line(err)
    log.warning("plan table cache: cannot use the folder %s (%s); planning continues without the cache",
                folder, reason)


def _folder_id(folder: Path) -> str:
    return os.path.abspath(folder)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _short(field: np.ndarray) -> str:
    text = repr(field.item()) if field.size == 1 else f"an array of shape {field.shape}"
    return text if len(text) <= 40 else text[:37] + "..."


__all__ = ["CorruptEntry", "META_FIELDS", "checksum", "read_entry", "remove_entry", "write_entry"]

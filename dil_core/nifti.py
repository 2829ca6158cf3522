"""A NIfTI file's voxels as stored, read past ITK, which hides what a damaged or invalid file holds.

ITK's NIfTI reader fills the missing bytes of a truncated file with zeros and turns NaN and infinity into 0
without a word. :func:`stored_voxels` reads the header and the voxel bytes itself, in chunks and never past
the size the header promises (nor past a caller's limit, so that a small gzip file inflating to gigabytes
costs nothing), and reports where the non-finite float values are. Scans (:mod:`dil_core.io`) and submissions
(:mod:`dil_core.validation`) both use it.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["NiftiHeader", "NiftiTooLarge", "NiftiTruncated", "read_header", "stored_voxels"]

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
#: NIfTI datatype code -> numpy kind of its float types (other types are only checked for length).
_FLOATS = {16: "f4", 64: "f8"}


class NiftiTruncated(ValueError):
    """The file (or its gzip stream) ends before the voxels its header promises, or is damaged."""


class NiftiTooLarge(ValueError):
    """The header promises more voxel bytes than the caller allows."""


@dataclass(frozen=True)
class NiftiHeader:
    """What the voxels need of a NIfTI-1/2 header: byte order, dims, datatype, bits per voxel, offset, scaling."""

    order: str
    dims: tuple[int, ...]
    datatype: int
    bitpix: int
    offset: int
    slope: float
    inter: float

    @property
    def n_bytes(self) -> int:
        """Bytes of voxel data the header promises."""
        rank = max(0, min(int(self.dims[0]), 7))
        count = 1
        for extent in self.dims[1 : rank + 1]:
            count *= max(int(extent), 1)
        return count * max(int(self.bitpix), 0) // 8


def read_header(head: bytes) -> NiftiHeader | None:
    """The header of a single-file NIfTI-1 or NIfTI-2 from its first bytes (540 suffice); None otherwise."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348 and head[344:348] == b"n+1\x00":
            dims = struct.unpack(order + "8h", head[40:56])
            datatype, bitpix = struct.unpack(order + "2h", head[70:74])
            slope, inter = struct.unpack(order + "2f", head[112:120])
            return NiftiHeader(order, dims, datatype, bitpix, int(struct.unpack(order + "f", head[108:112])[0]),
                               slope, inter)
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540 and head[4:12] == b"n+2\x00\r\n\x1a\n":
            datatype, bitpix = struct.unpack(order + "2h", head[12:16])
            dims = struct.unpack(order + "8q", head[16:80])
            slope, inter = struct.unpack(order + "2d", head[176:192])
            return NiftiHeader(order, dims, datatype, bitpix, int(struct.unpack(order + "q", head[168:176])[0]),
                               slope, inter)
    return None


def stored_voxels(path: str | Path, *, limit: int | None = None) -> tuple[NiftiHeader | None, np.ndarray, np.ndarray]:
    """Check a NIfTI file's voxel bytes; return its header and its non-finite float voxels.

    Parameters
    ----------
    path : path
        A ``.nii`` or ``.nii.gz`` file (anything else: ``(None, [], [])``).
    limit : int, optional
        Most voxel bytes to accept from the header (a label volume of the scan's size).

    Returns
    -------
    header, flat_index, values
        The non-finite voxels: their flat indices in storage order (X fastest) and their stored values after
        the header's scaling.

    Raises
    ------
    NiftiTruncated
        The data ends early, or the gzip stream is damaged.
    NiftiTooLarge
        The header promises more than ``limit`` bytes (nothing of the voxels is read then).
    """
    path = Path(path)
    with path.open("rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    bad: list[np.ndarray] = []
    values: list[np.ndarray] = []
    try:
        with opener(path, "rb") as stream:  # type: ignore[operator]
            head = stream.read(540)
            header = read_header(head)
            if header is None:
                if len(head) < 348 and path.name.lower().endswith((".nii", ".nii.gz")):
                    raise NiftiTruncated(f"header is {len(head)} bytes, a NIfTI header needs 348")
                return None, np.empty(0, np.int64), np.empty(0)
            need = header.n_bytes
            if limit is not None and need > limit:
                raise NiftiTooLarge(f"its header promises {need} bytes of voxels, more than {limit}")
            kind = _FLOATS.get(int(header.datatype))
            width = int(kind[1:]) if kind else 1
            data = head[header.offset :] if len(head) > header.offset else b""
            if len(head) < header.offset:
                stream.read(header.offset - len(head))
            got, done = 0, 0
            while True:
                usable = min(len(data), need - got) // width * width
                if kind is not None and usable:
                    stored = np.frombuffer(data[:usable], dtype=np.dtype(kind).newbyteorder(header.order))
                    where = np.flatnonzero(~np.isfinite(stored))
                    bad.append(where + done)
                    values.append(stored[where].astype(np.float64))
                got += usable
                done += usable // width
                data = data[usable:]
                if got >= need:
                    break
                chunk = stream.read(min(_CHUNK, need - got))
                if not chunk:
                    break
                data += chunk
    except (EOFError, OSError, zlib.error) as err:
        raise NiftiTruncated(f"truncated or corrupt gzip stream ({err})") from err
    if got < need:
        raise NiftiTruncated(
            f"truncated NIfTI file: the header needs {header.offset + need} bytes, the file has "
            f"{header.offset + got} (voxel data holds {got} of {need} bytes)"
        )
    flat = np.concatenate(bad) if bad else np.empty(0, np.int64)
    vals = np.concatenate(values) if values else np.empty(0)
    if header.slope not in (0.0, 1.0) or header.inter != 0.0:
        vals = vals * (header.slope if header.slope != 0.0 else 1.0) + header.inter
    return header, flat, vals

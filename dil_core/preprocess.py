"""Preprocessing for the segmenter: z-score, crop to the non-zero box, resample to a fixed working grid, and back.

The segmenter sees every scan on one fixed grid (paper section 3.1: "normalize ..., crop each image by its
non-zero boundaries with a margin ..., and resize to 55 x 55 x 30"). :func:`fit_preprocessor` decides the crop
box of a scan once; :func:`to_grid` takes any volume in the scan's shape (image, label, confidence map) to the
grid, and :func:`from_grid` brings a (soft) mask predicted on the grid back to the scan's own voxels, so masks
are always compared, stored and shown in the scan's geometry.

Resampling is linear by default (``order=1``) with pixel-centred alignment (``scipy.ndimage.zoom`` with
``grid_mode=True``, the same sampling as ``torch.nn.functional.interpolate(..., align_corners=False)``).
Masks go to the grid and back as *soft* masks (linear interpolation of 0/1 values); threshold at 0.5 at the
end when a binary mask is wanted (``from_grid(..., threshold=0.5)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from dil_core.typing import Volume

__all__ = ["DEFAULT_GRID", "Preprocessing", "fit_preprocessor", "from_grid", "normalise", "to_grid"]

#: Working grid of the segmenter, ``(X, Y, Z)`` voxels (fits a hippocampus crop, divisible by 16).
DEFAULT_GRID: tuple[int, int, int] = (48, 64, 48)

#: Default crop margin in voxels around the non-zero box (the paper draws it from [0, 10]).
DEFAULT_MARGIN = 10


def _triple(value: object, *, name: str, minimum: int) -> tuple[int, int, int]:
    """An int or three ints, each ``>= minimum``, as a 3-tuple."""
    items = [value, value, value] if isinstance(value, (int, np.integer)) else value
    try:
        out = tuple(items)  # type: ignore[arg-type]
    except TypeError as err:
        raise ValueError(f"{name}: expected an integer or 3 integers, got {value!r}") from err
    if len(out) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in out):
        raise ValueError(f"{name}: expected an integer or 3 integers, got {value!r}")
    if any(int(v) < minimum for v in out):
        raise ValueError(f"{name}: every value must be >= {minimum}, got {value!r}")
    return tuple(int(v) for v in out)  # type: ignore[return-value]


@dataclass(frozen=True)
class Preprocessing:
    """How one scan maps to the working grid: its shape, its crop box and the grid.

    Attributes
    ----------
    shape : (int, int, int)
        The scan's ``(X, Y, Z)`` shape.
    start, stop : (int, int, int)
        Crop box, ``volume[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]]``; ``0 <= start < stop <=
        shape``.
    grid : (int, int, int)
        Working grid shape the crop is resampled to.

    Notes
    -----
    Plain data, JSON-serialisable with :meth:`to_dict` / :meth:`from_dict`, so a ledger can store it and any
    round can be replayed.
    """

    shape: tuple[int, int, int]
    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    grid: tuple[int, int, int]

    def __post_init__(self) -> None:
        shape = _triple(self.shape, name="shape", minimum=1)
        start = _triple(self.start, name="start", minimum=0)
        stop = _triple(self.stop, name="stop", minimum=1)
        grid = _triple(self.grid, name="grid", minimum=1)
        for a in range(3):
            if not start[a] < stop[a] <= shape[a]:
                raise ValueError(
                    f"crop box: need 0 <= start < stop <= shape on every axis; axis {a} has start {start[a]}, "
                    f"stop {stop[a]}, shape {shape[a]}"
                )
        for field, value in (("shape", shape), ("start", start), ("stop", stop), ("grid", grid)):
            object.__setattr__(self, field, value)

    @property
    def crop_shape(self) -> tuple[int, int, int]:
        """Shape of the crop box."""
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    @property
    def crop_slices(self) -> tuple[slice, slice, slice]:
        """The crop box as index slices into a scan-shaped volume."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, list[int]]:
        """A JSON-ready dict (lists of ints)."""
        return {"shape": list(self.shape), "start": list(self.start), "stop": list(self.stop), "grid": list(self.grid)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Rebuild from :meth:`to_dict`'s output.

        Raises
        ------
        ValueError
            A key is missing or a value is invalid (the message names which).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"data: expected a mapping from to_dict(), got {type(data).__name__}")
        missing = [k for k in ("shape", "start", "stop", "grid") if k not in data]
        if missing:
            raise ValueError(f"data: missing key(s) {missing}; expected shape, start, stop, grid")
        return cls(
            shape=tuple(data["shape"]),  # type: ignore[arg-type]
            start=tuple(data["start"]),  # type: ignore[arg-type]
            stop=tuple(data["stop"]),  # type: ignore[arg-type]
            grid=tuple(data["grid"]),  # type: ignore[arg-type]
        )


def _real_3d(array: object, *, name: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected a 3D (X, Y, Z) array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: array is empty, shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise ValueError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: holds {int((~np.isfinite(arr)).sum())} NaN or infinite values")
    return arr


def normalise(array: Volume, *, nonzero: bool = True) -> np.ndarray:
    """Z-score intensities: subtract the mean, divide by the standard deviation.

    Parameters
    ----------
    array : (X, Y, Z) ndarray
        Intensities.
    nonzero : bool, default True
        Take mean and std over the non-zero voxels only and leave the zero background at 0 (skull-stripped or
        cropped MRI); ``False`` uses the whole volume.

    Returns
    -------
    (X, Y, Z) ndarray of float32
        Zero mean, unit std over the chosen voxels. A constant region gives 0 there (std taken as 1); an
        all-zero volume stays all zero.

    Raises
    ------
    ValueError
        Not a finite, real, non-empty 3D array.

    References
    ----------
    Paper section 3.1 normalises by the data set's mean and std; per-scan statistics are used here so a scan
    can be processed before the rest of the cohort is seen.
    """
    arr = _real_3d(array, name="array").astype(np.float64)
    region = arr != 0 if nonzero else np.ones(arr.shape, dtype=bool)
    out = np.zeros(arr.shape, dtype=np.float32)
    if not region.any():
        return out
    values = arr[region]
    std = float(values.std())
    out[region] = ((values - float(values.mean())) / (std if std > 0 else 1.0)).astype(np.float32)
    return out


def fit_preprocessor(
    scan_array: Volume,
    *,
    grid: Sequence[int] = DEFAULT_GRID,
    margin: int | Sequence[int] = DEFAULT_MARGIN,
    background: float = 0.0,
) -> Preprocessing:
    """Decide the crop box and grid for one scan.

    Parameters
    ----------
    scan_array : (X, Y, Z) ndarray
        The scan's intensities; the crop box is the bounding box of its foreground voxels, those not equal
        to ``background`` (the whole volume if there are none).
    grid : 3 ints, default (48, 64, 48)
        Working grid shape.
    margin : int or 3 ints, default 10
        Voxels added on each side of the non-zero box, per axis; the box is clipped to the volume.
    background : float, default 0.0
        Intensity of the empty surroundings. 0 for most scans; for scans z-scored after skull stripping the
        background is a constant non-zero value (BraTS here: the volume's minimum, ``scan_array.min()``).

    Returns
    -------
    Preprocessing

    Raises
    ------
    ValueError
        ``scan_array`` is not a finite real 3D array, ``grid`` is not 3 positive ints, ``margin`` is negative,
        ``background`` is not a finite number.

    References
    ----------
    Paper section 3.1 (crop by non-zero boundaries with a margin, resize to a fixed size).
    """
    arr = _real_3d(scan_array, name="scan_array")
    grid_t = _triple(tuple(grid) if not isinstance(grid, (int, np.integer)) else grid, name="grid", minimum=1)
    margin_t = _triple(margin, name="margin", minimum=0)
    if isinstance(background, bool) or not isinstance(background, (int, float, np.number)) or not np.isfinite(
        background
    ):
        raise ValueError(f"background: must be a finite number, got {background!r}")
    shape = tuple(int(s) for s in arr.shape)
    nz = arr != background
    start: list[int] = []
    stop: list[int] = []
    for a in range(3):
        other = tuple(b for b in range(3) if b != a)
        hits = np.flatnonzero(nz.any(axis=other))
        lo, hi = (int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, shape[a])
        start.append(max(0, lo - margin_t[a]))
        stop.append(min(shape[a], hi + margin_t[a]))
    return Preprocessing(shape=shape, start=tuple(start), stop=tuple(stop), grid=grid_t)  # type: ignore[arg-type]


def _check_order(order: int) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= int(order) <= 5:
        raise ValueError(f"order: spline order must be an integer in 0..5 (0 nearest, 1 linear), got {order!r}")
    return int(order)


def _resample(volume: np.ndarray, shape: tuple[int, int, int], order: int) -> np.ndarray:
    """Resample a 3D array to ``shape`` with pixel-centred alignment."""
    if tuple(volume.shape) == shape:
        return volume.astype(np.float32, copy=True)
    zoom = [t / s for t, s in zip(shape, volume.shape, strict=True)]
    out = ndimage.zoom(volume, zoom, output=np.float32, order=order, mode="nearest", grid_mode=True)
    if tuple(out.shape) != shape:  # pragma: no cover - zoom rounds shapes; guard against float round-off
        raise RuntimeError(f"resampling gave shape {out.shape}, expected {shape}")
    return out


def to_grid(prep: Preprocessing, volume: Volume, *, order: int = 1) -> np.ndarray:
    """Crop a scan-shaped volume and resample it to the working grid.

    Parameters
    ----------
    prep : Preprocessing
        From :func:`fit_preprocessor`.
    volume : (X, Y, Z) ndarray
        Image, (soft) mask or weight map in the scan's shape ``prep.shape``.
    order : int, default 1
        Interpolation order: 1 (linear) for images and soft masks, 0 (nearest) for multi-label maps.

    Returns
    -------
    ndarray of float32, shape ``prep.grid``

    Raises
    ------
    ValueError
        ``volume`` is not a finite real 3D array of shape ``prep.shape``, or ``order`` is invalid.
    """
    if not isinstance(prep, Preprocessing):
        raise TypeError(f"prep: expected a Preprocessing, got {type(prep).__name__}")
    arr = _real_3d(volume, name="volume")
    if tuple(arr.shape) != prep.shape:
        raise ValueError(f"volume: shape {arr.shape} does not match the scan's shape {prep.shape}")
    cropped = np.asarray(arr[prep.crop_slices], dtype=np.float32)
    return _resample(cropped, prep.grid, _check_order(order))


def from_grid(
    prep: Preprocessing,
    grid_volume: Volume,
    *,
    order: int = 1,
    fill: float = 0.0,
    threshold: float | None = None,
) -> np.ndarray:
    """Bring a volume on the working grid back to the scan's own voxels (resample, then un-crop).

    Parameters
    ----------
    prep : Preprocessing
        The scan's preprocessing.
    grid_volume : ndarray of shape ``prep.grid``
        A (soft) mask or map predicted on the grid.
    order : int, default 1
        Interpolation order (1: linear, the right choice for soft masks).
    fill : float, default 0.0
        Value outside the crop box.
    threshold : float, optional
        If given, return the boolean mask ``value >= threshold`` (0.5 for a binary mask from a soft one).

    Returns
    -------
    ndarray of shape ``prep.shape``
        float32, or bool when ``threshold`` is given.

    Raises
    ------
    ValueError
        ``grid_volume`` is not a finite real 3D array of shape ``prep.grid``, ``order`` is invalid, or
        ``fill`` / ``threshold`` is not a finite number.
    """
    if not isinstance(prep, Preprocessing):
        raise TypeError(f"prep: expected a Preprocessing, got {type(prep).__name__}")
    arr = _real_3d(grid_volume, name="grid_volume")
    if tuple(arr.shape) != prep.grid:
        raise ValueError(f"grid_volume: shape {arr.shape} does not match the working grid {prep.grid}")
    if not np.isfinite(fill):
        raise ValueError(f"fill: must be a finite number, got {fill!r}")
    if threshold is not None and not np.isfinite(threshold):
        raise ValueError(f"threshold: must be a finite number or None, got {threshold!r}")
    out = np.full(prep.shape, fill, dtype=np.float32)
    out[prep.crop_slices] = _resample(np.asarray(arr, dtype=np.float32), prep.crop_shape, _check_order(order))
    if threshold is not None:
        return out >= threshold
    return out


def segmenter_input(prep: Preprocessing, image: Volume) -> np.ndarray:
    """The segmenter's input for a scan: cropped and resampled to the working grid, then z-scored.

    Scans of one cohort differ in intensity scale (the demo's hippocampus MRIs span maxima from ~140 to
    ~2800), so every input is normalised (sec. 3.1) over its non-zero voxels. Normalising an already
    normalised image changes nothing.

    Parameters
    ----------
    prep : Preprocessing
        From :func:`fit_preprocessor` on this scan.
    image : (X, Y, Z) ndarray
        The scan in its own geometry.

    Returns
    -------
    (gx, gy, gz) float32 ndarray
    """
    return normalise(to_grid(prep, image, order=1)).astype(np.float32)

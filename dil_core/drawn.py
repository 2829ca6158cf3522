"""Which slices a validated submission draws: requested ones, requested-but-empty ones, and extra ones.

The rule is :func:`submission_content`'s; the annotator's labor (eq 3-4) counts its ``labeled`` slices.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SubmissionContent", "drawn_slices", "submission_content"]


@dataclass(frozen=True, eq=False)
class SubmissionContent:
    """What a validated submission draws, per requested plane (array axis).

    Every dict has one key per requested axis (an axis with nothing in it maps to an empty frozenset).

    Attributes
    ----------
    mask : (X, Y, Z) ndarray of uint8
        The binary mask (read-only).
    drawn : dict of int to frozenset of int
        Slices holding a drawing: the requested slices with any non-zero voxel, plus ``extra``.
        These are the annotator's labor (Eq 3-4).
    empty_requested : dict of int to frozenset of int
        Requested slices left empty: "no target on this slice", information, not an error.
    extra : dict of int to frozenset of int
        Slices the annotator drew without being asked (a subset of ``drawn``).
    """

    mask: np.ndarray = field(repr=False)
    drawn: dict[int, frozenset[int]]
    empty_requested: dict[int, frozenset[int]]
    extra: dict[int, frozenset[int]]

    @property
    def labeled(self) -> dict[int, frozenset[int]]:
        """Slices whose content the annotator decided (``drawn`` and ``empty_requested``): the labeled
        slices that propagation (Alg 2) copies from, empty ones included."""
        return {axis: self.drawn[axis] | self.empty_requested[axis] for axis in self.drawn}


def submission_content(mask: np.ndarray, requested: Mapping[int, Collection[int]]) -> SubmissionContent:
    """Split a submission's slices into drawn, requested-but-empty and extra ones.

    The rule. Only the planes (array axes) that are keys of ``requested`` are considered.

    1. A requested slice with any non-zero voxel is **drawn**; one with none is **empty_requested**.
    2. A voxel drawn on a sagittal slice also lies on coronal slices, so a non-zero voxel off the requested
       slices does not say on which plane the annotator drew it. An unrequested slice counts as drawn
       (**extra**) only if its non-zero voxels are not all explained by the drawn slices of the other
       requested planes: the extra slices are the fewest slices that, with the slices of rule 1, cover every
       non-zero voxel. They are found greedily (repeatedly take the unrequested slice holding most of the
       still-unexplained voxels; ties go to the lower axis, then the lower index) and pruned (an extra
       slice whose voxels all lie on other drawn slices is dropped, latest first).

    So a 2D drawing on an unrequested sagittal slice is one extra sagittal slice, not the dozens of coronal
    slices its voxels cross; the lines that requested sagittal drawings leave on coronal slices add nothing.
    A drawing on a plane not in ``requested`` (say axial) is counted on the requested planes it crosses.

    Parameters
    ----------
    mask : (X, Y, Z) ndarray
        The submission, non-zero = drawn (as :func:`validate_submission` returns it).
    requested : mapping of int to collection of int
        The labeling request: array axis (0, 1, 2) -> slice indices asked for on that axis. At least one axis.

    Returns
    -------
    SubmissionContent

    Raises
    ------
    ValueError
        If ``mask`` is not 3D, ``requested`` is empty, names an axis outside 0-2, or a slice index outside
        the mask.

    References
    ----------
    DESIGN.md, "Contracts: Submission"; labor, Eq 3-4.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be a 3D (X, Y, Z) array, got shape {mask.shape}")
    if not requested:
        raise ValueError("requested must name at least one axis (plane), got an empty mapping")
    asked: dict[int, frozenset[int]] = {}
    for axis, indices in requested.items():
        if axis not in (0, 1, 2):
            raise ValueError(f"requested: axis must be 0, 1 or 2, got {axis!r}")
        chosen = frozenset(int(i) for i in indices)
        outside = sorted(i for i in chosen if not 0 <= i < mask.shape[axis])
        if outside:
            raise ValueError(
                f"requested: slice index(es) {outside} on axis {axis} outside 0..{mask.shape[axis] - 1} "
                f"(mask shape {mask.shape})"
            )
        asked[int(axis)] = chosen
    binary = np.ascontiguousarray(mask != 0, dtype=np.uint8)
    binary.setflags(write=False)
    axes = sorted(asked)
    coords = np.nonzero(binary)  # one index array per axis

    nonempty = {a: frozenset(np.unique(coords[a]).tolist()) for a in axes}
    drawn_req = {a: asked[a] & nonempty[a] for a in axes}
    empty_req = {a: asked[a] - nonempty[a] for a in axes}

    explained = np.zeros(coords[0].size, dtype=bool)
    for a in axes:
        explained |= np.isin(coords[a], list(drawn_req[a]))
    chosen_extra: list[tuple[int, int]] = []
    while not explained.all():
        best: tuple[int, int, int] | None = None  # (-count, axis, index)
        for a in axes:
            counts = np.bincount(coords[a][~explained], minlength=mask.shape[a])
            index = int(np.argmax(counts))
            if counts[index] and (best is None or (-int(counts[index]), a, index) < best):
                best = (-int(counts[index]), a, index)
        if best is None:  # residual voxels lie on no requested plane's slice: impossible, axes non-empty
            break
        _, a, index = best
        chosen_extra.append((a, index))
        explained |= coords[a] == index

    extra_list = list(chosen_extra)
    for a, index in reversed(chosen_extra):
        others = [(b, j) for b, j in extra_list if (b, j) != (a, index)]
        on_slice = coords[a] == index
        covered = np.zeros(int(on_slice.sum()), dtype=bool)
        for b in axes:
            lines = drawn_req[b] | {j for c, j in others if c == b}
            if b != a and lines:
                covered |= np.isin(coords[b][on_slice], list(lines))
        if covered.all():
            extra_list.remove((a, index))

    extra = {a: frozenset(i for b, i in extra_list if b == a) for a in axes}
    drawn = {a: drawn_req[a] | extra[a] for a in axes}
    return SubmissionContent(mask=binary, drawn=drawn, empty_requested=empty_req, extra=extra)


def drawn_slices(mask: np.ndarray, requested: Mapping[int, Collection[int]]) -> dict[int, frozenset[int]]:
    """The drawn slices of a submission: ``submission_content(mask, requested).drawn``.

    See :func:`submission_content` for the rule, the parameters and the errors.
    """
    return submission_content(mask, requested).drawn

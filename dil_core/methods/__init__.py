"""Labeling methods by name: the paper's (``paper``) and DIL's own (``refine``).

:func:`get_method` is the one place a method's name is looked up; an unknown name lists the known ones.
"""

from __future__ import annotations

from dil_core.methods.base import AfterRound, Method, starting_prediction, training_sample
from dil_core.methods.paper import PaperMethod, final_mask
from dil_core.methods.refine import RefineMethod

__all__ = [
    "METHODS",
    "AfterRound",
    "Method",
    "PaperMethod",
    "RefineMethod",
    "final_mask",
    "get_method",
    "starting_prediction",
    "training_sample",
]

#: The known methods by name.
METHODS: dict[str, Method] = {"paper": PaperMethod(), "refine": RefineMethod()}


def get_method(name: str) -> Method:
    """The method registered under ``name``.

    Raises
    ------
    ValueError
        An unknown name; the message lists the known ones.
    """
    try:
        return METHODS[name]
    except (KeyError, TypeError) as err:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}") from err

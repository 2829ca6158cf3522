"""Labeling methods by name: the paper's (``paper``) and DIL's own (``refine``).

:func:`get_method` is the one place a method's name is looked up; an unknown name lists the known ones.
"""

from __future__ import annotations

from dil_core.config import CampaignConfig, ConfigError
from dil_core.methods.base import AfterRound, Method, starting_prediction, training_sample
from dil_core.methods.paper import PaperMethod, final_mask
from dil_core.methods.refine import RefineMethod

__all__ = [
    "METHODS",
    "AfterRound",
    "Method",
    "PaperMethod",
    "RefineMethod",
    "check_config",
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


def check_config(config: CampaignConfig) -> Method:
    """The config's method, after checking that the config's stop rule can judge it.

    Raises
    ------
    ConfigError
        An unknown method, a stop rule the method cannot be judged by (``refine`` builds its mask from the
        prediction that ``estimated`` would compare it with), or continual training beside a method that
        trains inside its rounds.
    """
    try:
        method = get_method(config.method)
    except ValueError as err:
        raise ConfigError(f"method: {err}") from err
    rule = config.stopping.rule.value
    if rule in method.unsupported_stop_rules:
        raise ConfigError(
            f"stopping.rule: {rule!r} cannot judge method {method.name!r}: {method.unsupported_stop_rules[rule]}; "
            "use 'ground_truth' (simulation) or 'accept'"
        )
    if config.continual.enabled and method.no_continual is not None:
        raise ConfigError(f"continual.enabled: continuous training cannot run with method {method.name!r}: "
                          f"{method.no_continual}; use method 'refine'")
    return method

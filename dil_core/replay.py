"""The replay buffer of Algorithm 1: past training samples revisited to fight catastrophic forgetting.

An auxiliary buffer ``B*`` of capacity ``b*`` receives every new sample; the replay buffer ``B`` is a random
choice of ``b`` entries of ``B*``, redrawn after each update; training retrieves ``m`` random samples of
``B``. A sample survives each later update with probability ``1 - 1/(b* + 1)``, so older samples fade
geometrically while newer ones are more likely to be replayed.

How Algorithm 1 is read here
----------------------------
* Line 2, ``j = randint(0, b*)``, is inclusive of ``b*`` as Python's ``random.randint`` is: the test on
  line 3, ``if j < b*``, only means something when ``j`` can equal ``b*``. So with probability
  ``1/(b* + 1)`` the new sample is not stored at all (with an exclusive bound the branch would always be
  taken and line 3 would be dead). Drawn with ``rng.integers(0, b_star, endpoint=True)``.
* While ``B*`` is not full, the new sample is appended instead (the algorithm starts from ``B* = {}``,
  Algorithm 3 line 3; overwriting a random slot of a partly empty buffer would leave empty slots for
  line 6 to select).
* Line 6, ``B = random.select(B*, b)``, draws ``b`` distinct entries of ``B*`` (all of them while ``B*``
  holds fewer than ``b``).

References
----------
Tian, Chen, Gao (2023), section 2.2, Algorithm 1; Algorithm 3 line 13; Algorithm 5 line 21.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from dil_core.typing import RngLike, generator_from_state

__all__ = ["ReplayBuffer"]


def _check_count(name: str, value: object, minimum: int) -> int:
    try:
        out = operator.index(value)  # type: ignore[arg-type]
    except TypeError as err:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from err
    if out < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return out


class ReplayBuffer:
    """Buffer ``B`` of size ``b`` drawn from an auxiliary buffer ``B*`` of size ``b*`` (Algorithm 1).

    Parameters
    ----------
    b : int
        Size of the replay buffer ``B`` (``b >= 1``).
    b_star : int
        Capacity of the auxiliary buffer ``B*`` (``b_star > b``).
    rng : numpy.random.Generator or int or None
        Source of randomness for replacement, selection and retrieval.

    Raises
    ------
    ValueError
        ``b < 1`` or ``b_star <= b``.

    Notes
    -----
    Samples are opaque objects (the trainer stores ``(image, target, weight)`` tuples) and are kept by
    reference. The buffer pickles as is; :meth:`state_dict` / :meth:`load_state_dict` give its full state,
    random generator included, as plain data.
    """

    def __init__(self, b: int, b_star: int, *, rng: RngLike = None) -> None:
        self.b = _check_count("b", b, 1)
        self.b_star = _check_count("b_star", b_star, 1)
        if self.b_star <= self.b:
            raise ValueError(f"b_star must be > b (Algorithm 1), got b_star={b_star!r}, b={b!r}")
        self._rng = np.random.default_rng(rng)
        self._aux: list[Any] = []
        self._selected: list[int] = []
        self.n_seen = 0
        self.n_dropped = 0

    def __len__(self) -> int:
        """Number of samples in ``B`` (at most ``b``)."""
        return len(self._selected)

    @property
    def buffer(self) -> list[Any]:
        """The samples of ``B``, in selection order."""
        return [self._aux[i] for i in self._selected]

    @property
    def auxiliary(self) -> list[Any]:
        """The samples of ``B*``, slot by slot."""
        return list(self._aux)

    def update(self, sample: Any) -> bool:
        """Offer a new sample to ``B*`` and redraw ``B`` (Algorithm 1, lines 2-6).

        Parameters
        ----------
        sample : object
            The new sample, stored by reference.

        Returns
        -------
        bool
            Whether the sample was stored (``False`` when ``j == b*`` on a full ``B*``).
        """
        self.n_seen += 1
        if len(self._aux) < self.b_star:
            self._aux.append(sample)
            stored = True
        else:
            j = int(self._rng.integers(0, self.b_star, endpoint=True))
            stored = j < self.b_star
            if stored:
                self._aux[j] = sample
            else:
                self.n_dropped += 1
        k = min(self.b, len(self._aux))
        self._selected = [int(i) for i in self._rng.choice(len(self._aux), size=k, replace=False)]
        return stored

    def retrieve(self, m: int) -> list[Any]:
        """Draw ``m`` distinct samples of ``B`` at random (the set ``S`` of equation 1).

        Parameters
        ----------
        m : int
            How many to draw, ``0 <= m <= b``; fewer come back while ``B`` holds fewer than ``m``.

        Returns
        -------
        list
            The drawn samples, in random order.

        Raises
        ------
        ValueError
            ``m`` is negative, not an integer, or larger than ``b``.
        """
        m = _check_count("m", m, 0)
        if m > self.b:
            raise ValueError(f"m must be <= b = {self.b} (equation 1), got m={m}")
        k = min(m, len(self._selected))
        if k == 0:
            return []
        picks = self._rng.choice(len(self._selected), size=k, replace=False)
        return [self._aux[self._selected[int(i)]] for i in picks]

    def state_dict(self) -> dict[str, Any]:
        """The full state as plain data: sizes, ``B*``, the selection ``B`` and the generator state."""
        return {
            "b": self.b,
            "b_star": self.b_star,
            "auxiliary": list(self._aux),
            "selected": list(self._selected),
            "n_seen": self.n_seen,
            "n_dropped": self.n_dropped,
            "rng_state": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict`.

        Raises
        ------
        ValueError
            The state's sizes differ from this buffer's, or its selection does not index ``B*``.
        """
        try:
            b, b_star = state["b"], state["b_star"]
            aux, selected = list(state["auxiliary"]), [int(i) for i in state["selected"]]
            rng_state = state["rng_state"]
        except (KeyError, TypeError) as err:
            raise ValueError(f"replay buffer state: missing or malformed entry ({err})") from err
        if (b, b_star) != (self.b, self.b_star):
            raise ValueError(
                f"replay buffer state: sizes b={b}, b_star={b_star} differ from this buffer's "
                f"b={self.b}, b_star={self.b_star}"
            )
        if len(aux) > self.b_star or len(selected) > self.b or any(not 0 <= i < len(aux) for i in selected):
            raise ValueError(
                f"replay buffer state: selection {selected} does not index an auxiliary buffer of {len(aux)}"
            )
        try:
            rng = generator_from_state(rng_state)
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"replay buffer state: bad generator state ({err})") from err
        self._rng = rng
        self._aux, self._selected = aux, selected
        self.n_seen = int(state.get("n_seen", len(aux)))
        self.n_dropped = int(state.get("n_dropped", 0))

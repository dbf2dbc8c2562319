"""OneSeg and registration in one chain: ``--method hybrid``.

Each step of the chain asks both propagators to carry the current labels to the next slice,
OneSeg by attention over its learned features and chained demons registration by the
image's own deformation, and mixes their class probabilities,
``weight * OneSeg + (1 - weight) * registration``. The label that goes on to the next step
is decided from the mix, so both chains follow the same labels. Registration warps each
label's one-hot channel by linear interpolation (soft, :class:`~sparseseg.oneseg.baselines.
RegistrationPropagator` with ``soft=True``), registering only a box around the labels.

The two fail differently: OneSeg's copies wander where features of neighbouring structures
look alike (a whole-body CT's organs run past their ends), registration's warps are held by
the image's edges but drift where the slices change much. Measured (docs/benchmarks.md, the
default model, each organ from its largest slice): AbdomenTS CT 0.705 (OneSeg), 0.504
(registration), 0.748 (hybrid); MR 0.783, 0.817, 0.838. On LeftAtrium it is level with OneSeg
alone and on the ~10 thick short-axis slices of Cardiac registration alone is better. It costs
a registration per step: 2-4x OneSeg's time on those organs, about 10x on a LeftAtrium volume.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sparseseg.oneseg.baselines import RegistrationPropagator
from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.propagation import OneSegPropagator, Propagator

HYBRID_WEIGHT = 0.7
"""OneSeg's share of the mix (registration's: ``1 - HYBRID_WEIGHT``). On AbdomenTS (14 organs,
default model) 0.7 / 0.8 scored 0.793 / 0.780 mean Dice with soft warps (hard warps at
0.6 / 0.7 / 0.8: 0.753 / 0.783 / 0.787); on LeftAtrium (10 held-out cases, 2 evenly spaced
slices) 0.7 / 0.8 scored 0.837 / 0.847 (OneSeg alone 0.845)."""


class HybridPropagator(Propagator):
    """Mixes the class probabilities of a OneSeg and a registration propagator at each step.

    Args:
        oneseg: OneSeg's propagator.
        registration: The registration propagator (soft: its probabilities are the warped
            one-hot; a hard one works too).
        weight: OneSeg's share of the mix, in ``[0, 1]``.
    """

    def __init__(self, oneseg: OneSegPropagator, registration: RegistrationPropagator, *,
                 weight: float = HYBRID_WEIGHT) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"hybrid weight must lie in [0, 1], got {weight}")
        self.oneseg = oneseg
        self.registration = registration
        self.weight = weight

    @classmethod
    def for_volume(cls, model: OneSegModel, image: np.ndarray, *, anchor: bool = True,
                   weight: float = HYBRID_WEIGHT) -> HybridPropagator:
        """The hybrid of ``model``'s OneSeg propagator and soft registration on ``image``."""
        return cls(OneSegPropagator(model, image, anchor=anchor),
                   RegistrationPropagator(image, soft=True), weight=weight)

    def prepare(self, classes: np.ndarray, keys: Mapping[int, np.ndarray]) -> None:
        """Start a label group in both propagators (only in the one that runs, at weight 0
        or 1)."""
        super().prepare(classes, keys)
        if self.weight > 0.0:
            self.oneseg.prepare(classes, keys)
        if self.weight < 1.0:
            self.registration.prepare(classes, keys)

    def scores(self, k: int, nxt: int, current: np.ndarray, *, start: int
               ) -> tuple[object, object]:
        """Both propagators' scores for the step; at weight 1 registration's are ``None``, at
        weight 0 OneSeg's (a propagator whose share is 0 is not run)."""
        own = self.oneseg.scores(k, nxt, current, start=start) if self.weight > 0.0 else None
        warped = (self.registration.scores(k, nxt, current, start=start)
                  if self.weight < 1.0 else None)
        return own, warped

    def probabilities(self, scores: tuple[object, object]) -> np.ndarray:
        """The weighted mix of both propagators' probabilities."""
        own, warped = scores
        if self.weight == 0.0:
            return self.registration.probabilities(warped)
        probs = self.oneseg.probabilities(own)
        if self.weight < 1.0:
            probs = self.weight * probs + (1.0 - self.weight) * \
                self.registration.probabilities(warped)
        return probs

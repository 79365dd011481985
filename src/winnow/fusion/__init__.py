"""Fusion of runs: one method per module, each citing the paper it comes from.

* :func:`rrf` — reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009);
* :func:`score_fusion` — CombSUM / CombMNZ / weighted sum (Fox & Shaw 1994, Lee 1997);
* :func:`normalize` — per-query score normalisation (min-max, z-score, max, sum).
"""

from __future__ import annotations

from winnow.fusion.normalize import normalize
from winnow.fusion.rrf import rrf
from winnow.fusion.score import score_fusion

__all__ = ["normalize", "rrf", "score_fusion"]

"""Which variant runs a unit of work: deterministic hashing of the unit's key against the canary weight.

The rule (the one in docs/concepts.md, "The canary protocol"; implement exactly this in any language
so that replicas written in different languages split the same way):

    digest  = SHA-256( UTF-8( revision + "/" + unit_key ) )
    bucket  = (first 8 bytes of digest, read as an unsigned big-endian integer) mod 100     # 0..99
    variant = "canary" if bucket < weight else "stable"                                      # weight: 0..100

`revision` is the value of `autotune.dwcp.io.canary-revision` ("" when absent). Salting with it gives
every proposal a fresh split while keeping each split fixed for the whole rollout. Properties:

* deterministic: the same (revision, key, weight) always gives the same variant, on every replica;
* weight 0 → every unit stable; weight 100 → every unit canary (buckets are 0..99);
* monotone: raising the weight only moves units from stable to canary, never back, because a unit's
  bucket does not depend on the weight;
* uniform: SHA-256 output is uniform, so the canary share converges to weight / 100.

Test vectors: bucket("unit-0") = 90, bucket("unit-1") = 40, bucket("unit-0", revision="run-hde-1") = 23
(so at weight 50 "unit-0" is stable and "unit-1" canary); `bucket()`'s doctest checks them.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Variant = Literal["stable", "canary"]

BUCKETS = 100


def bucket(unit_key: str, revision: str = "") -> int:
    """The unit's bucket in [0, 100).

    >>> bucket("unit-0"), bucket("unit-1"), bucket("unit-0", "run-hde-1")
    (90, 40, 23)
    """
    digest = hashlib.sha256(f"{revision}/{unit_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def route(unit_key: str, weight: int, revision: str = "") -> Variant:
    """ "canary" when the unit's bucket is below `weight` (integer percent, 0–100), else "stable"."""
    if weight <= 0:
        return "stable"
    if weight >= BUCKETS:
        return "canary"
    return "canary" if bucket(unit_key, revision) < weight else "stable"

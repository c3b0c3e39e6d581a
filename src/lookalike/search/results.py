"""The one shape a ranking takes in lookalike."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass
class SearchResult:
    """One ranked hit, the only shape a ranking takes in lookalike: catalog search, latent nearest
    (explore.latent), goes-with (explore.goes_with), shop-the-look regions (shop.pipeline) and
    cluster search (explore.cluster_search). ``rank`` starts at 1; ``score`` and ``distance`` come
    from :mod:`lookalike.index.distances` for the metric the ranking used."""

    rank: int
    id: str
    score: float       # higher = more similar: lookalike.index.distances.distance_to_score
    distance: float    # lower = closer, in the metric's own units
    label: str | None
    path: str | None = None  # the item's image; None where the ranking holds no paths (latent explorer)
    metadata: dict[str, Any] = field(default_factory=dict)
    # Why it ranked here (search.pipeline): "visual" (the index score; with a colour-fused encoder
    # also "visual.shape" + "visual.colour", which sum to it) and one term per business rule (search.boosts);
    # ``score`` = visual + the rule terms. Empty where a ranking has no rules (explore, shop).
    score_parts: dict[str, float] = field(default_factory=dict)
    group: list[str] = field(default_factory=list)   # other items of this hit's product (group_by)
    matched_variant: str | None = None               # the variant column's value of this image (group_by)
    duplicates: list[str] = field(default_factory=list)   # near duplicates folded into this hit (search.diversity)
    weak: bool = False   # visual score below the catalog's "no close match" threshold (search.calibration)

    def to_dict(self, fields: Sequence[str] | None = None, digits: int | None = 6) -> dict[str, Any]:
        """The one JSON rendering of a hit (CLI ``--json``, the API's ``Hit``, shop / goes-with / cluster
        reports). ``fields`` None: rank, id, score, distance, label, metadata and whichever of
        score_parts, group, matched_variant, duplicates, weak say something; else exactly ``fields``
        (names of :data:`FIELDS`), in that order, even when empty. Scores and distances (and score
        parts) are plain floats rounded to ``digits`` (None: as computed); lists and dicts are copies."""
        number = float if digits is None else (lambda v: round(float(v), digits))  # noqa: E731
        if fields is None:
            said = {"score_parts": bool(self.score_parts), "group": bool(self.group),
                    "matched_variant": self.matched_variant is not None, "duplicates": bool(self.duplicates),
                    "weak": self.weak}
            fields = [f for f in FIELDS if f != "path" and said.get(f, True)]
        try:   # renderers built once per class, not per call (an API answer renders every hit)
            return {f: _RENDER[f](self, number) for f in fields}
        except KeyError:
            unknown = [f for f in fields if f not in _RENDER]
            raise ValueError(f"unknown SearchResult fields {unknown}; choose from {', '.join(FIELDS)}") from None


_RENDER = {"rank": lambda h, n: int(h.rank), "id": lambda h, n: str(h.id), "score": lambda h, n: n(h.score),
           "distance": lambda h, n: n(h.distance), "label": lambda h, n: h.label, "path": lambda h, n: h.path,
           "metadata": lambda h, n: dict(h.metadata),
           "score_parts": lambda h, n: {k: n(v) for k, v in h.score_parts.items()},
           "group": lambda h, n: list(h.group), "matched_variant": lambda h, n: h.matched_variant,
           "duplicates": lambda h, n: list(h.duplicates), "weak": lambda h, n: bool(h.weak)}

#: every field :meth:`SearchResult.to_dict` can render, in its default order
FIELDS = ("rank", "id", "score", "distance", "label", "path", "metadata", "score_parts", "group", "matched_variant",
          "duplicates", "weak")

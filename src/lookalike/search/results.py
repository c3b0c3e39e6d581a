"""The one shape a ranking takes in lookalike."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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

    def to_dict(self) -> dict[str, Any]:
        out = {"rank": self.rank, "id": self.id, "score": round(self.score, 6), "distance": round(self.distance, 6),
               "label": self.label, "metadata": self.metadata}
        if self.score_parts:
            out["score_parts"] = {k: round(v, 6) for k, v in self.score_parts.items()}
        if self.group:
            out["group"] = list(self.group)
        if self.matched_variant is not None:
            out["matched_variant"] = self.matched_variant
        if self.duplicates:
            out["duplicates"] = list(self.duplicates)
        if self.weak:
            out["weak"] = True
        return out

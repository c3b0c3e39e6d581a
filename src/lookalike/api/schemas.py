"""Pydantic models for every request and response body (they are the OpenAPI schema at /docs)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_K = 100
DEFAULT_SIMILAR_K = 12   # GET /api/items/{id}/similar's k (its route and lookalike.api.fastpath)
DEFAULT_UPLOAD_K = 12    # POST /api/search/image's k (its route, AppState.search_upload and the fast path)
MAX_VECTOR_DIM = 8192
MAX_CLAUSES = 20    # filters or boosts in one request
MAX_EXAMPLES = 50             # examples in one "more like these, less like that" query
MAX_IMAGE_BASE64 = 30_000_000  # characters of one base64 image (the upload byte cap applies after decoding)
MAX_BATCH = 32                 # queries in one POST /api/search/batch
MAX_BULK = 100                 # items in one POST /api/items/bulk
MAX_URL = 2048


class RequestBody(BaseModel):
    """Base of every JSON request body: an unknown field is a 422 naming it (with the closest known
    field), never silently dropped: ``{"item": ..., "filter": "price<50"}`` (the CLI and the upload
    form spell it ``filter``, this body ``filters``) was a 200 with unfiltered results."""

    model_config = ConfigDict(extra="forbid")


class ErrorResponse(BaseModel):
    error: str = Field(description="short machine-readable code, e.g. not_found, too_large")
    message: str = Field(description="what went wrong, in words")


class Health(BaseModel):
    status: str
    version: str
    catalog: str
    items: int
    encoder: str | None
    read_only: bool
    features: dict[str, bool] = Field(description="which optional panels can answer now (module installed, "
                                                  "model trained / results stored)")


class CatalogInfo(BaseModel):
    name: str
    items: int
    default_encoder: str | None = None
    encoders: list[str] = []
    labels: dict[str, int] = Field(default_factory=dict, description="label -> item count")
    metadata_keys: list[str] = []
    current: bool = False
    api: str | None = Field(None, description="this catalog's routes (/api/catalogs/NAME/...) when the server "
                            "serves it")


class CatalogList(BaseModel):
    current: str
    catalogs: list[CatalogInfo]


class ItemSummary(BaseModel):
    id: str
    label: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    image_url: str
    thumb_url: str


class ItemDetail(ItemSummary):
    width: int | None = None
    height: int | None = None
    sha256: str | None = None


class ItemPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[ItemSummary]


class Hit(ItemSummary):
    rank: int
    score: float = Field(description="higher is more similar: the visual score (cosine similarity, or "
                                     "1/(1+distance)) plus any boost terms (score_parts)")
    distance: float
    score_parts: dict[str, float] = Field(default_factory=dict, description=(
        "why it ranked here: 'visual' (the index score; 'visual.shape' + 'visual.colour', summing to "
        "it, with a colour-fused encoder), one 'boost:CONDITION' / 'recency:COLUMN' term per rule that applied (score = visual + "
        "these terms), and the flags 'pin' / 'bury' (1.0)"))
    group: list[str] = Field(default_factory=list, description="with group_by: ids of the product's other items")
    matched_variant: str | None = Field(None, description="with group_by and variant: this image's variant value")
    weak: bool = Field(False, description="below the catalog's calibrated 'no close match' score threshold "
                                          "(image and vector queries)")
    duplicates: list[str] = Field(default_factory=list, description="with collapse_duplicates: ids of near "
                                  "duplicates folded into this hit")


class SearchResponse(BaseModel):
    query: ItemSummary | None = Field(None, description="the query item, for item-to-item search")
    encoder: str | None = None
    results: list[Hit]
    no_close_match: bool = Field(False, description="every hit is weak: nothing in the catalog is close to the "
                                 "query (its threshold: lookalike.search.calibration)")


class ExampleIn(RequestBody):
    """One example of a "more like these, less like that" query: exactly one of ``item``, ``image``
    and ``vector``, with a weight (negative: less like this)."""

    item: str | None = Field(None, min_length=1, max_length=512, description="a catalog item id")
    image: str | None = Field(None, min_length=1, max_length=MAX_IMAGE_BASE64, description=(
        "a photo as base64 (a 'data:image/...;base64,' prefix is accepted), checked like an upload"))
    vector: list[float] | None = Field(None, min_length=1, max_length=MAX_VECTOR_DIM,
                                       description="a vector in the encoder's space")
    weight: float = Field(1.0, ge=-100, le=100, description="> 0: more like this; < 0: less like this; not 0")

    @model_validator(mode="after")
    def _one_kind(self):
        if sum(x is not None for x in (self.item, self.image, self.vector)) != 1:
            raise ValueError("an example is exactly one of item, image or vector")
        if self.weight == 0:
            raise ValueError("an example's weight must not be 0")
        return self


class Steering(RequestBody):
    """Steering options of a search (also form fields of ``POST /api/search/image``)."""

    examples: list[ExampleIn] = Field(default_factory=list, max_length=MAX_EXAMPLES, description=(
        "more examples, combined with the query (which counts as an example of weight 1)"))
    combine: Literal["mean", "max"] = Field("mean", description=(
        "mean: Rocchio, the weighted mean of the L2-normalised example vectors (measured better); "
        "max: best-score fusion over the union of each positive example's candidates"))
    diversity: float = Field(0.0, ge=0.0, le=1.0, description=(
        "MMR λ: 0 = most similar first; higher = more varied results (over the best 2k candidates)"))
    collapse_duplicates: bool = Field(False, description=(
        "fold near duplicates (cosine distance <= 0.12) of a better hit into it, listed in its 'duplicates'"))


class VectorQuery(RequestBody):
    vector: list[float] = Field(min_length=1, max_length=MAX_VECTOR_DIM)
    k: int = Field(10, ge=1, le=MAX_K)
    encoder: str | None = Field(None, description="encoder whose space the vector lives in (default: the VAE for latent vectors)")
    label: str | None = Field(None, description="only return items with this label")


class SearchRequest(Steering):
    """One search with every ranking option (``POST /api/search``): ``item`` or ``vector``, and/or
    weighted ``examples`` (photos: ``POST /api/search/image`` takes the same options as form fields)."""

    item: str | None = Field(None, min_length=1, max_length=512, description="query by this catalog item (excluded "
                             "from the results; with group_by, its whole product is)")
    vector: list[float] | None = Field(None, min_length=1, max_length=MAX_VECTOR_DIM, description="query by a vector")
    k: int = Field(10, ge=1, le=MAX_K, description="results (products, with group_by)")
    encoder: str | None = Field(None, max_length=200, description="encoder whose vectors to search (default: the catalog's)")
    label: str | None = Field(None, max_length=200, description="only items with this label")
    where: dict[str, str | list[str]] | None = Field(None, description="column -> value (a list: any of)")
    filters: list[str] = Field(default_factory=list, max_length=MAX_CLAUSES, description=(
        "filter clauses, all must hold: price<50, 20<=price<=80, colour=red, colour!=red, colour in red,blue, "
        "colour not in red,blue, brand exists, brand missing"))
    boosts: list[str] = Field(default_factory=list, max_length=MAX_CLAUSES, description=(
        "CONDITION:WEIGHT, WEIGHT added to the score of items matching CONDITION (a filter clause), e.g. "
        "in_stock=1:+0.05"))
    recency: str | None = Field(None, max_length=200, description="COLUMN:HALF_LIFE:WEIGHT, e.g. added:30d:0.1 adds "
                                "WEIGHT·2^(-age/half-life) from the date in COLUMN")
    pin: list[str] = Field(default_factory=list, max_length=MAX_K, description="item ids shown first, in order "
                           "(when they pass the filters)")
    bury: list[str] = Field(default_factory=list, max_length=1000, description="item ids shown after every other hit")
    group_by: str | None = Field(None, max_length=200, description="one result per value of this column "
                                 "(e.g. product_id): its best image, the others in 'group'")
    variant: str | None = Field(None, max_length=200, description="with group_by: the column saying which variant "
                                "matched (e.g. colour)")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="drop hits whose visual score is lower")

    @model_validator(mode="after")
    def _one_query(self):
        if self.item is not None and self.vector is not None:
            raise ValueError("give exactly one of item or vector, not both")
        if self.item is None and self.vector is None and not any(e.weight > 0 for e in self.examples):
            raise ValueError("give exactly one of item or vector, or at least one positive example")
        return self


class BatchQuery(SearchRequest):
    """One query of ``POST /api/search/batch``: the options of ``POST /api/search`` plus ``image``
    (base64). Which query kind is given is checked per query, so a bad one answers its own error."""

    image: str | None = Field(None, min_length=1, max_length=MAX_IMAGE_BASE64, description=(
        "query by a photo as base64 (a 'data:image/...;base64,' prefix is accepted), checked like an upload"))

    @model_validator(mode="after")
    def _one_query(self):   # replaces SearchRequest's: a query without one answers its own 422 in the batch
        return self


class BatchRequest(RequestBody):
    queries: list[BatchQuery] = Field(min_length=1, max_length=MAX_BATCH, description=(
        f"up to {MAX_BATCH} queries, answered in order; one failing query does not fail the others"))


class BatchAnswer(BaseModel):
    status: int = Field(description="the HTTP status this query alone would have had (200, 404, 422...)")
    result: SearchResponse | None = Field(None, description="the answer when status is 200")
    error: ErrorResponse | None = Field(None, description="why not, otherwise")


class BatchResponse(BaseModel):
    answers: list[BatchAnswer] = Field(description="one per query, in the order of the request")
    failed: int = Field(description="how many queries answered an error")


MetadataValue = str | int | float | bool


class ItemWriteIn(RequestBody):
    """One item of ``POST /api/items/bulk``: an id, exactly one of ``image`` (base64) and ``url``,
    an optional label and metadata."""

    id: str = Field(min_length=1, max_length=512, description="the item id (an existing id is replaced)")
    image: str | None = Field(None, min_length=1, max_length=MAX_IMAGE_BASE64, description=(
        "the photo as base64 (a 'data:image/...;base64,' prefix is accepted), checked like an upload"))
    url: str | None = Field(None, min_length=8, max_length=MAX_URL, description=(
        "an http(s) URL the server downloads the photo from (timeouts, retries, size cap; cached under "
        "the catalog's downloads/)"))
    label: str | None = Field(None, max_length=512)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, description=(
        "column -> text, number or boolean (at most 100 keys; not id, label or path)"))


class BulkWrite(RequestBody):
    items: list[ItemWriteIn] = Field(min_length=1, max_length=MAX_BULK, description=(
        f"up to {MAX_BULK} items, written in one transaction; an item that fails is reported and not "
        f"written, the others are"))


class WriteResult(BaseModel):
    id: str
    outcome: Literal["added", "updated", "unchanged", "failed"]
    reason: str | None = Field(None, description="when failed: a short code (not_an_image, too_large, "
                               "http_404, timeout, invalid_metadata, duplicate_id...)")
    message: str | None = None


class BulkWriteResponse(BaseModel):
    results: list[WriteResult] = Field(description="one per item, in the order of the request")
    added: int
    updated: int
    unchanged: int
    failed: int


class MetadataPatch(RequestBody):
    """``PATCH /api/items/{id}``: change the label and/or metadata without re-embedding the image.
    Unknown fields are a 422: a misspelt ``metadata`` was a 200 that changed nothing."""

    label: str | None = Field(None, max_length=512, description="the new label (null clears it; leave it out "
                              "to keep it)")
    metadata: dict[str, MetadataValue | None] = Field(default_factory=dict, description=(
        "column -> new value, merged into the item's metadata (null removes the column)"))
    replace: bool = Field(False, description="metadata becomes exactly this dict instead of being merged")


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "starting", "failed"]
    catalog: str
    items: int | None = None
    encoder: str | None = None
    message: str | None = None


class LatentVector(RequestBody):
    z: list[float] = Field(min_length=1, max_length=1024)


class LatentRange(BaseModel):
    index: int
    min: float
    max: float
    mean: float
    std: float


class LatentInfo(BaseModel):
    model: str
    encoder: str
    dim: int
    image_size: int
    ranges: list[LatentRange]


class ItemLatent(BaseModel):
    id: str
    z: list[float]


class Interpolation(BaseModel):
    a: str
    b: str
    steps: list[list[float]] = Field(description="latent vectors from a to b, ends included")
    images: list[str] = Field(description="the decoded image of each step (PNG data URLs)")


class GoesWithRow(BaseModel):
    category: str
    results: list[Hit]


class GoesWithResponse(BaseModel):
    query: ItemSummary
    method: str
    rows: list[GoesWithRow]


class LabelCount(BaseModel):
    label: str
    count: int


class Cluster(BaseModel):
    id: int
    size: int
    label: str | None = Field(None, description="most common label in the cluster")
    purity: float | None = None
    examples: list[ItemSummary] = Field(description="the members nearest the centroid, nearest first")
    label_mix: list[LabelCount] = Field(default_factory=list, description="labels of the members, most first "
                                                                          "(empty when the catalog has no labels)")


class Staleness(BaseModel):
    """How far a stored explore result is behind the catalog (``lookalike.explore.stored.staleness``)."""
    added_since: int = Field(0, description="items with vectors the stored result does not show")
    removed_since: int = Field(0, description="items of the stored result removed since")
    stale: str | None = Field(None, description="what changed and the command that reruns it; null while current")


class ClusterResponse(Staleness):
    encoder: str | None = None
    method: str | None = None
    k_chosen_by: str | None = Field(None, description="how k was chosen: elbow, silhouette, calinski-harabasz or user")
    labels: list[str] = Field(default_factory=list, description="every label in the clusters, for one colour per label")
    clusters: list[Cluster]


class MapPoint(BaseModel):
    id: str
    x: float
    y: float
    label: str | None = None
    cluster: int | None = None
    thumb_url: str


class MapResponse(Staleness):
    encoder: str | None = None
    method: str | None = None
    points: list[MapPoint]


class DuplicateGroup(BaseModel):
    items: list[ItemSummary]
    exact: bool = Field(description="all members have the same file content")
    max_distance: float = Field(description="largest embedding distance linking the group (0 for exact copies)")


class DuplicateResponse(BaseModel):
    encoder: str
    threshold: float
    items_checked: int
    total_groups: int
    groups: list[DuplicateGroup]


class Region(BaseModel):
    person: int = Field(description="index into people")
    box: list[float] = Field(description="[x0, y0, x1, y1] in pixels of the photo")
    region: str = Field("", description="body region: top, bottom, footwear, onepiece, outerwear, head, hands")
    category: str = Field(description="the catalog category the label probe sees in the region, or its top results' "
                                      "majority label when the probe is unsure (a note says so; the region's name "
                                      "when the catalog has no label probe)")
    searched: list[str] | None = Field(None, description="catalog categories searched (None: all)")
    confidence: float | None = Field(None, description="the label probe's probability of that category on the crop "
                                                       "(the share of the top results with it when they decided)")
    fit: float | None = Field(None, description="probe probability mass on the categories this region may hold")
    visibility: float | None = Field(None, description="mean keypoint visibility of the region")
    notes: list[str] = []
    results: list[Hit]


class Person(BaseModel):
    box: list[float]
    score: float
    notes: list[str] = []
    attributes: list[dict[str, Any]] = []


class ShopResponse(BaseModel):
    width: int
    height: int
    detector: str
    encoder: str
    notes: list[str] = []
    people: list[Person]
    regions: list[Region]
    skipped: list[dict[str, Any]] = Field(default_factory=list, description="candidate regions not searched: "
                                          "person, name, reason")


class EvalResponse(BaseModel):
    catalog: str
    encoder: str | None = None
    metrics: dict[str, Any]
    details: dict[str, Any] = Field(default_factory=dict)


class LabelQualityRow(BaseModel):
    label: str
    n: int = Field(description="queries of this label")
    p_at_1: float
    map_at_k: float
    confused_with: str | None = Field(None, description="label most often returned at rank 1 instead")
    confused_share: float = Field(description="that label's share of this label's queries")


class FailedQueryOut(BaseModel):
    query: ItemSummary
    ap_at_k: float
    returned: list[ItemSummary] = Field(description="what came back instead, nearest first")


class LabelFailures(BaseModel):
    label: str
    queries: list[FailedQueryOut]


class QualityResponse(BaseModel):
    catalog: str
    encoder: str
    k: int
    n_queries: int
    overall: dict[str, float] = Field(description="P@1 and mAP@k over all queries")
    labels: list[LabelQualityRow] = Field(description="per label, worst first")
    confusion: dict[str, Any] = Field(description="labels, counts: query label (rows) x top-1 neighbour label")
    failures: list[LabelFailures] = Field(description="failed queries of the worst labels")
    figures: dict[str, str] = Field(description="figure name -> PNG URL (labels, confusion)")

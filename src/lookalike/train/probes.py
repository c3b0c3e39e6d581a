"""Attribute probes: a linear classifier on a catalog's embeddings for any label column.

    report = train_probe(cat, label="gender")              # fit, score on held-out items, save
    value, probs = predict_attribute(cat, "clothing-gender", "photo.jpg")

A probe is a scikit-learn pipeline (standardise, then multinomial logistic regression) on the
vectors of one encoder. It is scored on held-out items (a stratified ``holdout`` fraction, or the
catalog's own split column), then — unless ``refit=False`` — refitted on every labelled item before
it is saved, so the saved model uses all the labels while the reported numbers stay honest.
Saved under ``<home>/models/probe/<name>/`` (``probe.joblib`` + ``config.json``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lookalike.config import check_name

PROBE_FILE, CONFIG_FILE = "probe.joblib", "config.json"


@dataclass
class ProbeReport:
    name: str
    catalog: str
    label: str
    encoder: str
    n_train: int
    n_test: int
    accuracy: float
    macro_f1: float
    classes: list[str]
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    path: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def probe_dir(name: str, home) -> Path:
    from lookalike.config import home_dir

    return home_dir(home) / "models" / "probe" / check_name(name, "probe")


def split_items(labels: list, holdout: float, split_values: list | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions: the split column's train/test values when given (validation rows are
    left out), otherwise a stratified random ``holdout`` fraction per label."""
    positions = np.arange(len(labels))
    if split_values is not None:
        values = np.array([str(v).lower() if v is not None else "" for v in split_values])
        train, test = positions[values == "train"], positions[values == "test"]
        if len(train) == 0 or len(test) == 0:
            raise ValueError("the split column needs both 'train' and 'test' rows")
        return train, test
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be between 0 and 1, not {holdout}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    labels_arr = np.array(labels, dtype=object)
    for value in sorted(set(labels)):
        members = rng.permutation(positions[labels_arr == value])
        n_test = int(round(len(members) * holdout)) if len(members) > 1 else 0
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


def _pipeline(C: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))


def train_probe(cat, label: str = "label", encoder: str | None = None, *, holdout: float = 0.3,
                split_column: str | None = None, name: str | None = None, C: float = 0.1,
                refit: bool = True, seed: int = 0) -> ProbeReport:
    """Fit a probe for ``label`` on ``cat``'s vectors, score it on held-out items, save it."""
    import joblib
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    spec = encoder or cat.default_encoder
    ids, matrix = cat.vectors(spec)
    values = cat.labels(label, spec)
    keep = np.array([v is not None for v in values])
    if keep.sum() < 4:
        raise ValueError(f"column {label!r} has fewer than 4 labelled items in catalog {cat.name!r}")
    matrix = matrix[keep]
    values = [v for v, k in zip(values, keep) if k]
    if len(set(values)) < 2:
        raise ValueError(f"column {label!r} has a single value; a probe needs at least two")
    splits = [v for v, k in zip(cat.labels(split_column, spec), keep) if k] if split_column else None
    train, test = split_items(values, holdout, splits, seed)
    y = np.array(values, dtype=object)
    model = _pipeline(C).fit(matrix[train], y[train])
    predicted = model.predict(matrix[test])
    per_class = classification_report(y[test], predicted, output_dict=True, zero_division=0)
    classes = [str(c) for c in model.classes_]
    report = ProbeReport(
        name=check_name(name or f"{cat.name}-{label}", "probe"), catalog=cat.name, label=label, encoder=spec,
        n_train=len(train), n_test=len(test), accuracy=float(accuracy_score(y[test], predicted)),
        macro_f1=float(f1_score(y[test], predicted, average="macro", zero_division=0)), classes=classes,
        per_class={c: {"precision": per_class[c]["precision"], "recall": per_class[c]["recall"],
                       "f1": per_class[c]["f1-score"], "n": int(per_class[c]["support"])}
                   for c in classes if c in per_class})
    if refit:
        model = _pipeline(C).fit(matrix, y)
    folder = probe_dir(report.name, cat.home)
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / PROBE_FILE)
    report.path = str(folder)
    config = {**report.to_dict(), "refit_on_all": refit, "C": C, "holdout": holdout, "split_column": split_column}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return report


@dataclass
class Probe:
    name: str
    encoder: str
    label: str
    model: object
    config: dict

    def predict(self, vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Predicted values and the (n, classes) probabilities, columns in ``classes`` order."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        return [str(v) for v in self.model.predict(vectors)], self.model.predict_proba(vectors)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.model.classes_]


def load_probe(name: str, home=None) -> Probe:
    import joblib

    folder = probe_dir(name, home)
    if not (folder / PROBE_FILE).exists():
        raise FileNotFoundError(f"no probe named {name!r} in {folder.parent}; "
                                "train one with `lookalike train probe`")
    config = json.loads((folder / CONFIG_FILE).read_text())
    return Probe(name=name, encoder=config["encoder"], label=config["label"],
                 model=joblib.load(folder / PROBE_FILE), config=config)


def predict_attribute(catalog, probe_name: str, image) -> tuple[str, dict[str, float]]:
    """The probe's predicted value for one image (path, bytes or PIL) and every class probability.

    ``catalog`` is a :class:`lookalike.Catalog` or a catalog name; the image is embedded with the
    probe's encoder exactly as catalog items are."""
    if isinstance(catalog, str):
        from lookalike.catalog import Catalog

        catalog = Catalog.open(catalog)
    probe = load_probe(probe_name, catalog.home)
    vector = catalog.embed_images([image], probe.encoder)
    values, probabilities = probe.predict(vector)
    return values[0], {c: float(p) for c, p in zip(probe.classes, probabilities[0])}

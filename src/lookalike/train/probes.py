"""Attribute probes: a linear classifier on a catalog's embeddings for any label column.

    report = cat.train_probe("gender")                       # fit, score on held-out items, save
    value, probs = cat.predict_attribute("clothing-gender", "photo.jpg")
    probe = Probe(ProbeConfig(label="gender", encoder="clip")).fit(vectors, labels)   # plain arrays

A probe (:mod:`lookalike.train.base` contract) is a scikit-learn pipeline (standardise, then
multinomial logistic regression) on the vectors of one encoder. ``fit`` scores it on held-out items
(a stratified ``holdout`` fraction, or the catalog's own split column), then — unless
``refit=False`` — refits it on every labelled item, so the saved model uses all the labels while
the reported numbers stay honest. Saved under ``model_dir("probe", name, home)`` (``probe.joblib``
+ ``config.json``); :class:`lookalike.Catalog` gathers the vectors and labels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from lookalike.config import check_name, model_dir
from lookalike.data.artifacts import atomic_file
from lookalike.train.base import read_config, save_config

PROBE_FILE = "probe.joblib"
FORMAT_VERSION = 1


@dataclass
class ProbeConfig:
    label: str = "label"            # the column predicted
    encoder: str = ""               # the encoder spec of the vectors (queries are embedded with it)
    C: float = 0.1                  # inverse regularisation strength of the logistic regression
    holdout: float = 0.3            # held-out fraction per value (ignored with split values)
    split_column: str | None = None  # recorded: where the split values came from
    refit: bool = True              # refit on every labelled item after scoring
    seed: int = 0


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
    # scikit-learn takes ~6 s to import: loaded on use, not by `import lookalike` / `lookalike --help`
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))


class Probe:
    """Predicts ``config.label`` from vectors of ``config.encoder``; ``report`` holds the held-out scores."""

    kind = "probe"
    version = FORMAT_VERSION

    def __init__(self, config: ProbeConfig | None = None, name: str = ""):
        self.config = config or ProbeConfig()
        self.name = name
        self.model = None
        self.report: ProbeReport | None = None

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def encoder(self) -> str:
        return self.config.encoder

    def fit(self, vectors: np.ndarray, labels: Sequence[str | None], splits: Sequence | None = None) -> "Probe":
        """Fit on (n, dim) ``vectors`` and their ``labels`` (None: unlabelled, left out); ``splits``
        (aligned 'train'/'test' values) replaces the random holdout. ValueError with fewer than 4
        labelled items or a single value."""
        # scikit-learn takes ~6 s to import: loaded on use, not by `import lookalike` / `lookalike --help`
        from sklearn.metrics import accuracy_score, classification_report, f1_score

        cfg = self.config
        keep = np.array([v is not None for v in labels], dtype=bool)
        if keep.sum() < 4:
            raise ValueError(f"column {cfg.label!r} has fewer than 4 labelled items")
        matrix = np.asarray(vectors)[keep]
        values = [v for v, k in zip(labels, keep) if k]
        if len(set(values)) < 2:
            raise ValueError(f"column {cfg.label!r} has a single value; a probe needs at least two")
        kept_splits = [v for v, k in zip(splits, keep) if k] if splits is not None else None
        train, test = split_items(values, cfg.holdout, kept_splits, cfg.seed)
        y = np.array(values, dtype=object)
        model = _pipeline(cfg.C).fit(matrix[train], y[train])
        predicted = model.predict(matrix[test])
        per_class = classification_report(y[test], predicted, output_dict=True, zero_division=0)
        classes = [str(c) for c in model.classes_]
        self.report = ProbeReport(
            name=self.name, catalog="", label=cfg.label, encoder=cfg.encoder, n_train=len(train), n_test=len(test),
            accuracy=float(accuracy_score(y[test], predicted)),
            macro_f1=float(f1_score(y[test], predicted, average="macro", zero_division=0)), classes=classes,
            per_class={c: {"precision": per_class[c]["precision"], "recall": per_class[c]["recall"],
                           "f1": per_class[c]["f1-score"], "n": int(per_class[c]["support"])}
                       for c in classes if c in per_class})
        self.model = _pipeline(cfg.C).fit(matrix, y) if cfg.refit else model
        return self

    def predict(self, vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Predicted values and the (n, classes) probabilities, columns in ``classes`` order."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        return [str(v) for v in self.model.predict(vectors)], self.model.predict_proba(vectors)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.model.classes_]

    def save(self, directory) -> Path:
        """Write probe.joblib and config.json (the config, the held-out report)."""
        import joblib  # comes with scikit-learn; ~0.15 s kept off `import lookalike`

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(folder / PROBE_FILE) as f:
            joblib.dump(self.model, f)
        if self.report is not None:
            self.report.path = str(folder)
        report = self.report.to_dict() if self.report is not None else {}
        save_config(folder, self.kind, self.version, self.config, **report, refit_on_all=self.config.refit)
        return folder

    @classmethod
    def load(cls, directory) -> "Probe":
        import joblib  # comes with scikit-learn; ~0.15 s kept off `import lookalike`

        folder = Path(directory)
        doc = read_config(folder, cls.kind, cls.version, "train one with `lookalike train probe`")
        names = {f.name for f in fields(ProbeConfig)}
        saved = doc.get("config") or {**{k: doc[k] for k in names if k in doc}, "refit": doc.get("refit_on_all", True)}
        probe = cls(ProbeConfig(**{k: v for k, v in saved.items() if k in names}), name=folder.name)
        probe.model = joblib.load(folder / PROBE_FILE)
        report = {f.name: doc[f.name] for f in fields(ProbeReport) if f.name in doc}
        probe.report = ProbeReport(**report) if len(report) == len(fields(ProbeReport)) else None
        return probe


def load_probe(name: str, home=None) -> Probe:
    """The probe saved as ``name`` in ``home``; FileNotFoundError naming the probes folder when none."""
    folder = model_dir("probe", check_name(name, "probe"), home)
    if not (folder / PROBE_FILE).exists():
        raise FileNotFoundError(f"no probe named {name!r} in {folder.parent}; "
                                "train one with `lookalike train probe`")
    return Probe.load(folder)

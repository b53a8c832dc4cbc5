"""Classifier trained on real data, evaluated on translated data (Yang et al. 2021, Fig. 4c)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from anndata import AnnData
from scipy import sparse
from sklearn.base import clone
from sklearn.metrics import roc_auc_score, roc_curve

from ._inputs import get_labels, get_matrix


@dataclass
class ROCCurve:
    """One ROC curve: false / true positive rates at each decision threshold."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float


@dataclass
class ROCResult:
    """Result of :func:`translated_classifier_roc`.

    Attributes
    ----------
    classes
        Classes the classifier was trained on (its ``classes_``).
    positive
        Binary problems: the positive class; ``None`` with more than two classes.
    curves
        ``{class: ROCCurve}``: the positive class only for binary problems, otherwise one
        one-vs-rest curve per class present among the translated cells.
    auc
        Binary: the AUC of the positive class; otherwise the macro average of the
        one-vs-rest AUCs (classes absent from the translated cells are left out).
    n_train, n_test
        Numbers of real (training) and translated (test) cells.
    classifier
        The fitted classifier.
    """

    classes: list
    positive: Any
    curves: dict[Any, ROCCurve]
    auc: float
    n_train: int
    n_test: int
    classifier: Any = field(repr=False)

    @property
    def auc_per_class(self) -> dict[Any, float]:
        """``{class: AUC}`` of every curve."""
        return {c: curve.auc for c, curve in self.curves.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary: AUC, per-class AUCs and cell counts.

        Returns
        -------
        ``{"auc", "auc_per_class", "positive", "n_train", "n_test"}``, with the classes
        (and the positive class, if any) as strings.
        """
        return {
            "auc": self.auc,
            "auc_per_class": {str(c): a for c, a in self.auc_per_class.items()},
            "positive": None if self.positive is None else str(self.positive),
            "n_train": self.n_train,
            "n_test": self.n_test,
        }


def _sorted(values: set) -> list:
    """Sorted natively where the values compare (numbers, strings), else by their text."""
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _aligned(real: Any, translated: Any, layer_real: str | None, layer_translated: str | None):
    """Both matrices with the same features in the same order (by var_names for AnnData)."""
    X, names_real = get_matrix(real, layer_real, "real")
    Y, names_trans = get_matrix(translated, layer_translated, "translated")
    if names_real is not None and names_trans is not None:
        missing = np.setdiff1d(names_real, names_trans)
        if missing.size:
            raise ValueError(
                f"translated lacks {missing.size} of the real data's features "
                f"(e.g. {missing[:3].tolist()}); translate into the same modality"
            )
        if not np.array_equal(names_real, names_trans):
            for label, names in (("real", names_real), ("translated", names_trans)):
                uniq, counts = np.unique(names, return_counts=True)
                if (counts > 1).any():  # matching by name needs each name once
                    raise ValueError(
                        f"{label} names feature {uniq[counts > 1][0]!r} twice, and real / "
                        "translated list their features in different orders; make the names "
                        "unique first (AnnData.var_names_make_unique())"
                    )
            Y = translated[:, names_real]
            Y, _ = get_matrix(Y, layer_translated, "translated")
    elif X.shape[1] != Y.shape[1]:
        raise ValueError(f"real has {X.shape[1]} features but translated has {Y.shape[1]}")
    for name, m in (("real", X), ("translated", Y)):
        values = np.asarray(m.data if sparse.issparse(m) else m)
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            raise ValueError(f"{name} holds NaN or infinite values")
    return X, Y


def translated_classifier_roc(
    real: AnnData | np.ndarray,
    labels_real: str | Any,
    translated: AnnData | np.ndarray,
    labels_translated: str | Any,
    *,
    classifier: Any = None,
    positive: Any = None,
    layer_real: str | None = None,
    layer_translated: str | None = None,
    seed: int = 0,
) -> ROCResult:
    """ROC of a classifier fitted on real data of one modality and applied to translated data.

    The test of Yang et al. (2021, Fig. 4c): a classifier learns the labels of a modality's
    real cells; the cells of another modality, translated into this one, are scored with it
    and compared against their own (other-modality) labels.  A high AUC means the
    translation keeps what separates the classes in the target modality.

    Parameters
    ----------
    real
        Real cells of the target modality: AnnData or ``(cells, features)`` array (dense or
        sparse).
    labels_real
        Their labels: an ``obs`` key of ``real`` or an array.
    translated
        Cells translated into the target modality (e.g. ``model.translate(...)``).  With two
        AnnData objects the features are matched by ``var_names``.
    labels_translated
        Labels of the translated cells (from their source modality): ``obs`` key or array.
        Every label must be one of the training classes.
    classifier
        Any scikit-learn classifier with ``predict_proba``; it is cloned, never modified.
        Default: ``RandomForestClassifier(n_estimators=100, max_depth=2,
        random_state=seed)``, as in the paper.
    positive
        Binary problems: the positive class (default: the second of the sorted classes).
    layer_real, layer_translated
        Read these layers instead of ``X``.
    seed
        ``random_state`` of the default classifier.

    Returns
    -------
    :class:`ROCResult` with the AUC (binary, or macro one-vs-rest for more than two
    classes), per-class AUCs and the curves.
    """
    X, Y = _aligned(real, translated, layer_real, layer_translated)
    y_real = get_labels(real, labels_real, X.shape[0], "labels_real")
    y_trans = get_labels(translated, labels_translated, Y.shape[0], "labels_translated")
    classes = _sorted(set(y_real.tolist()))
    if len(classes) < 2:
        raise ValueError(f"labels_real has a single class {classes}; need at least two")
    unseen = _sorted(set(y_trans.tolist()) - set(classes))
    if unseen:
        raise ValueError(
            f"labels_translated has classes the classifier never saw: {unseen}; "
            f"training classes are {classes}"
        )
    binary = len(classes) == 2
    if positive is not None and positive not in classes:
        raise ValueError(f"positive={positive!r} is not one of the classes {classes}")
    if not binary and positive is not None:
        raise ValueError(f"positive= applies to two classes only; got {len(classes)} classes")

    if classifier is None:
        from sklearn.ensemble import RandomForestClassifier

        clf = RandomForestClassifier(n_estimators=100, max_depth=2, random_state=seed)
    else:
        if not hasattr(classifier, "predict_proba"):
            raise ValueError(f"classifier {type(classifier).__name__} has no predict_proba")
        clf = clone(classifier)
    # any label type: fit on integer codes, mapped back through `classes`
    code = {c: i for i, c in enumerate(classes)}
    clf.fit(X, np.array([code[v] for v in y_real]))
    proba = clf.predict_proba(Y)
    column = {c: list(clf.classes_).index(code[c]) for c in classes}
    y_code = np.array([code[v] for v in y_trans])

    present = [c for c in classes if c in set(y_trans.tolist())]
    if len(present) < 2:
        raise ValueError(f"the translated cells all have label {present[0]!r}; an AUC needs two classes")
    if binary:
        positive = classes[1] if positive is None else positive
    curves = {}
    for c in [positive] if binary else present:
        truth = y_code == code[c]
        score = proba[:, column[c]]
        fpr, tpr, thr = roc_curve(truth, score)
        curves[c] = ROCCurve(fpr, tpr, thr, float(roc_auc_score(truth, score)))
    auc = curves[positive].auc if binary else float(np.mean([v.auc for v in curves.values()]))
    return ROCResult(
        classes=classes,
        positive=positive if binary else None,
        curves=curves,
        auc=auc,
        n_train=int(X.shape[0]),
        n_test=int(Y.shape[0]),
        classifier=clf,
    )

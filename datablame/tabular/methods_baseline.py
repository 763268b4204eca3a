"""Baselines that need no model internals: kNN in feature space, exact KNN-Shapley (Jia et al. 2019),
SHAP-pattern cosine (trees), and random scores."""

from __future__ import annotations

import warnings

import numpy as np
from pydantic import NonNegativeInt, PositiveInt

from datablame.errors import DatablameError
from datablame.tabular.methods_tree import _model_agreement
from datablame.tabular.registry import tabular_method


def _distances(X_query: np.ndarray, X_train: np.ndarray) -> np.ndarray:
    if np.isnan(X_query).any() or np.isnan(X_train).any():
        raise DatablameError("Feature-space distances cannot take missing values (NaN).",
                             "impute the features, or use a tree method (leaf_cooccurrence, boostin).")
    d2 = (X_query ** 2).sum(1)[:, None] + (X_train ** 2).sum(1)[None, :] - 2 * X_query @ X_train.T
    return np.sqrt(np.maximum(d2, 0.0))


@tabular_method("knn", needs="any", noise="neighbours",
                unit="label-signed kernel 1 / (1 + d / d_k), d the Euclidean distance of the standardised "
                     "features and d_k the query's distance to its k-th nearest train row; unitless in "
                     "[-1, 1], > 1/2 in magnitude for the k nearest; > 0: a near row with an agreeing label")
def knn(model, X_train, y_train, X_query, y_query, k: PositiveInt = 5) -> np.ndarray:
    d = _distances(X_query, X_train)
    dk = np.sort(d, axis=1)[:, min(k, d.shape[1]) - 1]
    return _model_agreement(model, y_train, X_query, y_query) / (1.0 + d / np.maximum(dk, 1e-12)[:, None])


def knn_shapley_values(X_train: np.ndarray, y_train: np.ndarray, X_query: np.ndarray, y_query: np.ndarray,
                       k: int = 5) -> np.ndarray:
    """Exact Shapley values (Jia et al. 2019, Theorem 1) of the K-NN classifier utility
    U(S) = (1/K) * #(the min(K, |S|) nearest rows of S whose label equals the query's).
    Ties in distance are broken by row index. (n_query, n_train), each row sums to U(all rows)."""
    d = _distances(X_query, X_train)
    n = len(y_train)
    out = np.zeros((len(X_query), n))
    for q in range(len(X_query)):
        order = np.argsort(d[q], kind="stable")
        match = (np.asarray(y_train)[order] == y_query[q]).astype(float)
        s = np.zeros(n)
        s[n - 1] = match[n - 1] / n
        for i in range(n - 2, -1, -1):  # i is 0-based: rank i + 1
            s[i] = s[i + 1] + (match[i] - match[i + 1]) / k * min(k, i + 1) / (i + 1)
        out[q, order] = s
    return out


@tabular_method("knn_shapley", needs="any", tasks=("classification",),
                unit="exact KNN-Shapley value (Jia et al. 2019) of the K-NN accuracy on the query (probability "
                     "of the right label, in [-1, 1]; a query's values sum to its K-NN accuracy); > 0: the row "
                     "raises it")
def knn_shapley(model, X_train, y_train, X_query, y_query, k: PositiveInt = 5) -> np.ndarray:
    return knn_shapley_values(X_train, y_train, X_query, y_query, k)


def _shap_matrix(model, X: np.ndarray) -> np.ndarray:
    import shap

    target = getattr(model, "booster", None) or model.estimator
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # shap's notes on its output format
            vals = shap.TreeExplainer(target).shap_values(X)
    except shap.utils._exceptions.InvalidModelError as err:
        raise DatablameError(f"shap.TreeExplainer cannot explain this {model.kind} model: {err}",
                             "use another tree method (leaf_cooccurrence, boostin) for it.") from err
    if isinstance(vals, list):
        vals = np.stack(vals, axis=-1)
    return np.asarray(vals, float).reshape(len(X), -1)


def _shap_limitation(model) -> str | None:
    """shap.TreeExplainer explains scikit-learn's GradientBoostingClassifier only for two classes."""
    if model.kind == "gradient_boosting" and model.task == "classification" and model.n_classes > 2:
        return (f"shap.TreeExplainer supports scikit-learn's GradientBoostingClassifier only for binary "
                f"classification, and this one has {model.n_classes} classes")
    return None


@tabular_method("shap_cosine", needs="tree", noise="neighbours", limitation=_shap_limitation,
                unit="label-signed cosine of the query's and the train row's SHAP vectors (shap.TreeExplainer, "
                     "all classes), clipped at 0 (opposite reasoning is no similarity, so it cannot flip the "
                     "label sign), unitless in [-1, 1]; > 0: the model reasons alike about a row with an "
                     "agreeing label")
def shap_cosine(model, X_train, y_train, X_query, y_query) -> np.ndarray:
    sq, st = _shap_matrix(model, X_query), _shap_matrix(model, X_train)
    sq = sq / np.maximum(np.linalg.norm(sq, axis=1, keepdims=True), 1e-30)
    st = st / np.maximum(np.linalg.norm(st, axis=1, keepdims=True), 1e-30)
    return np.clip(sq @ st.T, 0.0, None) * _model_agreement(model, y_train, X_query, y_query)


@tabular_method("random", needs="any", noise="random",
                unit="standard normal noise, seeded (a floor for every comparison)")
def random_scores(model, X_train, y_train, X_query, y_query, seed: NonNegativeInt = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((len(X_query), len(X_train)))

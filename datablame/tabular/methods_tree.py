"""Tree-ensemble methods: leaf co-occurrence, Random-Forest proximity, and BoostIn-style leaf-statistics
influence for gradient boosting.

Similarity methods are given a sign by label agreement (`label_agreement`): +1 when the train row's
label would pull the query's prediction toward the query's true label, -1 when away.
"""

from __future__ import annotations

import numpy as np

from datablame.tabular.models_trees import raw_to_prediction
from datablame.tabular.registry import tabular_method


def label_agreement(y_train: np.ndarray, y_query: np.ndarray, task: str,
                    pred_query: np.ndarray | None = None) -> np.ndarray:
    """(n_query, n_train) of +1/-1 (0 on a tie). Classification: +1 when the labels are equal.
    Regression: +1 when the train target and the query's target lie on the same side of the query's
    prediction (default: the train mean), i.e. pulling toward the train row lowers the query's loss."""
    if task == "classification":
        return np.where(np.asarray(y_query)[:, None] == np.asarray(y_train)[None, :], 1.0, -1.0)
    center = np.full(len(y_query), float(np.mean(y_train))) if pred_query is None else np.asarray(pred_query, float)
    return np.sign((np.asarray(y_train)[None, :] - center[:, None]) * (np.asarray(y_query) - center)[:, None])


def _model_agreement(model, y_train, X_query, y_query) -> np.ndarray:
    pred = model.predict(X_query) if model.task == "regression" else None
    return label_agreement(y_train, y_query, model.task, pred)


def leaf_cooccurrence_similarity(leaves_query: np.ndarray, leaves_train: np.ndarray,
                                 tree_weights: np.ndarray) -> np.ndarray:
    """sum_m w[q, m] * 1[train row in the query's leaf of tree m] / (train rows in that leaf).

    `tree_weights` is (n_query, M) or (M,). With w = 1/M this is the forest's kernel: each row sums
    to 1 over the train rows whenever every query leaf holds a train row."""
    w = np.broadcast_to(np.asarray(tree_weights, float), (len(leaves_query), leaves_query.shape[1]))
    out = np.zeros((len(leaves_query), len(leaves_train)))
    for m in range(leaves_query.shape[1]):
        same = leaves_query[:, m][:, None] == leaves_train[:, m][None, :]
        out += w[:, m][:, None] * same / np.maximum(same.sum(axis=1, keepdims=True), 1)
    return out


def tree_weights(model, X_query: np.ndarray) -> np.ndarray:
    """Forest: 1/M per tree. Boosted: |what tree m adds to the query's raw score|, normalised per query."""
    if not getattr(model, "boosted", False):
        return np.full(model.n_trees, 1.0 / model.n_trees)
    c = np.abs(model.leaf_contributions(X_query))
    return c / np.maximum(c.sum(axis=1, keepdims=True), 1e-30)


@tabular_method("leaf_cooccurrence", needs="tree", noise="neighbours",
                unit="label-signed leaf co-occurrence: sum over trees of w_m / (train rows in the query's leaf) "
                     "for train rows sharing it, w_m = 1/M (forests) or the tree's share of |raw-score change| "
                     "(boosting); unitless in [-1, 1]; > 0: a similar row with an agreeing label")
def leaf_cooccurrence(model, X_train, y_train, X_query, y_query) -> np.ndarray:
    sim = leaf_cooccurrence_similarity(model.leaves(X_query), model.leaves(X_train), tree_weights(model, X_query))
    return sim * _model_agreement(model, y_train, X_query, y_query)


@tabular_method("rf_proximity", needs="tree", noise="neighbours",
                unit="label-signed Breiman proximity: the fraction of trees where the query and the train row "
                     "share a leaf, unitless in [-1, 1]; > 0: a similar row with an agreeing label")
def rf_proximity(model, X_train, y_train, X_query, y_query) -> np.ndarray:
    lq, lt = model.leaves(X_query), model.leaves(X_train)
    prox = np.zeros((len(lq), len(lt)))
    for m in range(lq.shape[1]):
        prox += lq[:, m][:, None] == lt[:, m][None, :]
    return prox / lq.shape[1] * _model_agreement(model, y_train, X_query, y_query)


def _raw_grad_hess(raw: np.ndarray, y: np.ndarray, task: str, hess_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """d loss / d raw score and its diagonal second derivative, both (n, C)."""
    if task == "regression":
        return raw - np.asarray(y, float)[:, None], np.ones_like(raw)
    if raw.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-raw))
        return p - (np.asarray(y) == 1)[:, None], p * (1.0 - p)
    p = raw_to_prediction(raw, task)
    onehot = np.eye(raw.shape[1])[np.asarray(y, int)]
    return p - onehot, hess_scale * p * (1.0 - p)


@tabular_method("boostin", needs="boosted", noise="self",
                unit="leaf-statistics influence (BoostIn / TreeInfluence style): the first-order increase of the "
                     "query's loss (nats, or half squared standardised error) when the train row is removed, "
                     "summing over trees the change of the shared leaf's value; > 0: the row helped")
def boostin(model, X_train, y_train, X_query, y_query) -> np.ndarray:
    """Approximation (documented): every tree keeps its structure and every later tree its leaves;
    removing row i changes only the values of the leaves i sits in. A Newton leaf value
    v = -G / (H + lambda) (G, H: sums of the leaf's gradients and hessians at that round) moves by
    (g_i + v h_i) / (H + lambda) when i's weight goes from 1 to 0; times the learning rate that is
    the change of the raw score of every row in the leaf. The initial score (the targets' mean or
    log-odds) moves by g_i / sum(h) (Newton step). The query's loss changes by its raw-score
    gradient at the final model times the summed changes of the leaves it shares with i. The
    knock-on effect on later trees' gradients (BoostIn ignores it too) is not modelled."""
    lt, lq = model.leaves(X_train), model.leaves(X_query)
    contrib = model.leaf_contributions(X_train)
    C, lr, lam = model.n_outputs, model.learning_rate, model.reg_lambda
    cls = model.tree_class
    raw = np.zeros((len(y_train), C))
    for k in range(C):
        raw[:, k] = model.raw_score(X_train)[:, k] - contrib[:, cls == k].sum(axis=1)  # the initial score
    dq, _ = _raw_grad_hess(model.raw_score(X_query), y_query, model.task, model.hess_scale)
    # the initial score (fitted to the targets' mean / log-odds) moves by g_i / sum(h) for every query
    g0, h0 = _raw_grad_hess(raw, y_train, model.task, model.hess_scale)
    out = dq @ (g0 / h0.sum(axis=0, keepdims=True)).T
    for r in range(model.n_trees // C):
        g, h = _raw_grad_hess(raw, y_train, model.task, model.hess_scale)
        for k in range(C):
            m = r * C + k
            leaf = lt[:, m]
            uniq, inv = np.unique(leaf, return_inverse=True)
            H = np.bincount(inv, weights=h[:, k], minlength=len(uniq))[inv]
            v = contrib[:, m] / lr
            delta = lr * (g[:, k] + v * h[:, k]) / np.maximum(H + lam, 1e-12)
            same = lq[:, m][:, None] == leaf[None, :]
            out += dq[:, k][:, None] * same * delta[None, :]
        for k in range(C):
            raw[:, k] += contrib[:, r * C + k]
    return out

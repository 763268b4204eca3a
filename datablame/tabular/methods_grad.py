"""Gradient methods for the differentiable tabular models (torch MLP, linear/logistic).

Notation: g_i = gradient of train row i's loss at the fitted parameters, g_q the query's, N the
number of training rows, J the training objective (models_torch), l2 its L2 strength.
"""

from __future__ import annotations

import numpy as np
from pydantic import NonNegativeFloat

from datablame.tabular.model_base import loss_gradient_wrt_output
from datablame.tabular.registry import tabular_method


@tabular_method("grad_dot", needs="differentiable", noise="self",
                unit="g_q . g_i (nats^2 per squared parameter unit); > 0: a gradient step on the train row "
                     "lowers the query's loss")
def grad_dot(model, X_train, y_train, X_query, y_query) -> np.ndarray:
    return model.per_example_grads(X_query, y_query) @ model.per_example_grads(X_train, y_train).T


@tabular_method("grad_cosine", needs="differentiable",
                unit="cosine of g_q and g_i, unitless in [-1, 1]; > 0: a step on the train row lowers the "
                     "query's loss")
def grad_cosine(model, X_train, y_train, X_query, y_query) -> np.ndarray:
    gq, gt = model.per_example_grads(X_query, y_query), model.per_example_grads(X_train, y_train)
    gq = gq / np.maximum(np.linalg.norm(gq, axis=1, keepdims=True), 1e-30)
    gt = gt / np.maximum(np.linalg.norm(gt, axis=1, keepdims=True), 1e-30)
    return gq @ gt.T


@tabular_method("influence", needs="differentiable", noise="self",
                unit="g_q^T (H + damping I)^-1 g_i / N with H the exact Hessian of J: the first-order increase "
                     "of the query's loss (nats) when the train row is removed; > 0: the row helped")
def influence(model, X_train, y_train, X_query, y_query, damping: NonNegativeFloat = 0.0) -> np.ndarray:
    H = model.objective_hessian(X_train, y_train)
    H = H + damping * np.eye(len(H))
    gt = model.per_example_grads(X_train, y_train)
    gq = model.per_example_grads(X_query, y_query)
    # the MLP's Hessian can be indefinite: solve in the eigenbasis and drop non-positive directions
    evals, evecs = np.linalg.eigh(0.5 * (H + H.T))
    keep = evals > 1e-10 * max(abs(evals).max(), 1e-30)
    inv = (evecs[:, keep] / evals[keep]) @ evecs[:, keep].T
    return gq @ inv @ gt.T / len(y_train)


@tabular_method("tracin", needs="differentiable", noise="self",
                unit="sum over saved checkpoints c of step_c * g_q(c) . g_i(c) / N: the first-order decrease of "
                     "the query's loss from the row's share of the full-batch steps (nats; Adam's "
                     "preconditioning ignored, L-BFGS phases count step 1); > 0: the row helped")
def tracin(model, X_train, y_train, X_query, y_query) -> np.ndarray:
    out = np.zeros((len(X_query), len(X_train)))
    for step, theta in model.checkpoints:
        gq = model.per_example_grads(X_query, y_query, theta)
        gt = model.per_example_grads(X_train, y_train, theta)
        out += step * (gq @ gt.T)
    return out / len(y_train)


@tabular_method("representer", needs="differentiable", noise="self",
                unit="representer point (Yeh et al. 2018) on the last layer: the row's term "
                     "alpha_i (f_i . f_q) of the query's output, alpha_i = -dloss_i/doutput / (l2 N), "
                     "times -dloss_q/doutput: the first-order increase of the query's loss (nats) if that "
                     "term were removed; > 0: the row helped")
def representer(model, X_train, y_train, X_query, y_query) -> np.ndarray:
    ft, fq = model.last_layer_features(X_train), model.last_layer_features(X_query)
    alpha = -loss_gradient_wrt_output(model.predict(X_train), y_train, model.task) / (model.l2 * len(y_train))
    dq = loss_gradient_wrt_output(model.predict(X_query), y_query, model.task)
    return -(fq @ ft.T) * (dq @ alpha.T)

"""Tree ensembles behind `TabularModel`: scikit-learn RandomForest and GradientBoosting, XGBoost and
LightGBM (native boosters, so a user's saved model and ours are the same object).

Every ensemble exposes the same view for the tree methods: `leaves(X)` (n, M) leaf ids of M trees;
for boosted ones also `tree_class` (M,) (the output each tree adds to), `leaf_contributions(X)`
(n, M) (what each tree adds to the raw score, learning rate included), `raw_score(X)` (n, C) and
`learning_rate`, `reg_lambda`, `hess_scale`. Trees are ordered round-major (round r, output k is
tree r * C + k), C = number of classes for multi-class and 1 otherwise.
"""

from __future__ import annotations

import json
from abc import abstractmethod

import numpy as np

from datablame.errors import DatablameError
from datablame.tabular.model_base import TabularModel


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def raw_to_prediction(raw: np.ndarray, task: str) -> np.ndarray:
    """Raw boosting score (n, C) -> probabilities (n, K) or the regression prediction (n,)."""
    if task == "regression":
        return raw[:, 0]
    if raw.shape[1] == 1:
        p1 = 1.0 / (1.0 + np.exp(-raw[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    return _softmax(raw)


class TreeEnsemble(TabularModel):
    is_tree_ensemble = True
    boosted = False
    learning_rate = 1.0
    reg_lambda = 0.0
    hess_scale = 1.0

    def __init__(self, task, n_classes=0, seed=0, *, n_estimators: int = 50, **kw) -> None:
        super().__init__(task, n_classes, seed)
        self.n_estimators, self.extra = n_estimators, dict(kw)

    def params(self):
        return {"n_estimators": self.n_estimators, **self.extra}

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.task == "classification" and self.n_classes > 2 else 1

    @property
    def tree_class(self) -> np.ndarray:
        return np.arange(self.n_trees) % self.n_outputs

    @property
    @abstractmethod
    def n_trees(self) -> int:
        """Trees in the ensemble (boosted multi-class: rounds x classes)."""

    @abstractmethod
    def leaves(self, X: np.ndarray) -> np.ndarray:
        """Leaf index of each row in each tree, [n, n_trees]."""

    def leaf_contributions(self, X: np.ndarray) -> np.ndarray:
        raise DatablameError(f"The {self.kind} model is not boosted; it has no per-tree raw-score contributions.",
                             "use a gradient-boosted model (gradient_boosting, xgboost, lightgbm).")

    def raw_score(self, X: np.ndarray) -> np.ndarray:
        raise DatablameError(f"The {self.kind} model is not boosted; it has no raw (margin) score.",
                             "use a gradient-boosted model (gradient_boosting, xgboost, lightgbm).")

    def predict(self, X):
        return raw_to_prediction(self.raw_score(X), self.task)


class _Sklearn(TreeEnsemble):
    estimator = None

    def _full_proba(self, X: np.ndarray) -> np.ndarray:
        """predict_proba with one column per class of the table, even if a class was absent in fit."""
        proba = self.estimator.predict_proba(X)
        out = np.zeros((len(X), self.n_classes))
        out[:, self.estimator.classes_.astype(int)] = proba
        return out

    def leaves(self, X):
        self._require_fitted()
        leaves = self.estimator.apply(X)
        return np.asarray(leaves).astype(np.int64).reshape(len(X), -1)

    @property
    def n_trees(self):
        return int(np.asarray(self.estimator.estimators_).size)


class RandomForestModel(_Sklearn):
    kind = "random_forest"
    accepts_nan = True

    def fit(self, X, y, sample_weight=None):
        self._check_fit_input(X, y, sample_weight)
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        cls = RandomForestClassifier if self.task == "classification" else RandomForestRegressor
        opts = {"min_samples_leaf": 1, **self.extra}
        self.estimator = cls(n_estimators=self.n_estimators, random_state=self.seed, n_jobs=1, **opts)
        self.estimator.fit(X, y, sample_weight=sample_weight)
        self.fitted = True
        return self

    def predict(self, X):
        self._require_fitted()
        return self._full_proba(X) if self.task == "classification" else self.estimator.predict(X)


class GradientBoostingModel(_Sklearn):
    kind = "gradient_boosting"
    boosted = True

    def __init__(self, task, n_classes=0, seed=0, *, n_estimators: int = 50, learning_rate: float = 0.1,
                 max_depth: int = 3, **kw) -> None:
        super().__init__(task, n_classes, seed, n_estimators=n_estimators, **kw)
        self.learning_rate, self.max_depth = learning_rate, max_depth

    def params(self):
        return {**super().params(), "learning_rate": self.learning_rate, "max_depth": self.max_depth}

    def fit(self, X, y, sample_weight=None):
        self._check_fit_input(X, y, sample_weight)
        from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

        cls = GradientBoostingClassifier if self.task == "classification" else GradientBoostingRegressor
        self.estimator = cls(n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                             max_depth=self.max_depth, random_state=self.seed, **self.extra)
        self.estimator.fit(X, y, sample_weight=sample_weight)
        self.fitted = True
        return self

    def leaf_contributions(self, X):
        leaves = self.leaves(X)
        trees = np.asarray(self.estimator.estimators_).reshape(-1)
        return np.stack([self.learning_rate * t.tree_.value[leaves[:, m], 0, 0] for m, t in enumerate(trees)], 1)

    def raw_score(self, X):
        self._require_fitted()
        if self.task == "regression":
            return self.estimator.predict(X)[:, None]
        raw = self.estimator.decision_function(X)
        return raw[:, None] if raw.ndim == 1 else raw


class XGBoostModel(TreeEnsemble):
    kind = "xgboost"
    boosted = True
    accepts_nan = True

    def __init__(self, task, n_classes=0, seed=0, *, n_estimators: int = 50, learning_rate: float = 0.3,
                 max_depth: int = 4, reg_lambda: float = 1.0, **kw) -> None:
        super().__init__(task, n_classes, seed, n_estimators=n_estimators, **kw)
        self.learning_rate, self.max_depth, self.reg_lambda = learning_rate, max_depth, reg_lambda
        self.booster = None
        self.hess_scale = 2.0 if self.n_outputs > 1 else 1.0  # xgboost's softmax hessian is 2 p (1 - p)

    def params(self):
        return {**super().params(), "learning_rate": self.learning_rate, "max_depth": self.max_depth,
                "reg_lambda": self.reg_lambda}

    def _xgb_params(self) -> dict:
        p = {"eta": self.learning_rate, "max_depth": self.max_depth, "lambda": self.reg_lambda, "seed": self.seed,
             "nthread": 1, "tree_method": "exact", **self.extra}
        if self.task == "regression":
            p["objective"] = "reg:squarederror"
        elif self.n_classes == 2:
            p["objective"] = "binary:logistic"
        else:
            p.update(objective="multi:softprob", num_class=self.n_classes)
        return p

    def fit(self, X, y, sample_weight=None):
        self._check_fit_input(X, y, sample_weight)
        import xgboost as xgb

        dm = xgb.DMatrix(X, label=y, weight=sample_weight, missing=np.nan)
        self.booster = xgb.train(self._xgb_params(), dm, num_boost_round=self.n_estimators)
        # training settings are not part of XGBoost's model file: keep ours there for load_model
        self.booster.set_attr(datablame_params=json.dumps(self.params()))
        self._leaf_values = None
        self.fitted = True
        return self

    @property
    def n_trees(self):
        return self.booster.num_boosted_rounds() * self.n_outputs

    def _dmatrix(self, X):
        import xgboost as xgb

        self._require_fitted()
        return xgb.DMatrix(np.asarray(X, float), missing=np.nan)

    def leaves(self, X):
        return self.booster.predict(self._dmatrix(X), pred_leaf=True).astype(np.int64).reshape(len(X), -1)

    def leaf_contributions(self, X):
        if getattr(self, "_leaf_values", None) is None:
            df = self.booster.trees_to_dataframe()
            df = df[df["Feature"] == "Leaf"]
            self._leaf_values = {(int(t), int(n)): float(v) for t, n, v in zip(df["Tree"], df["Node"], df["Gain"],
                                                                                strict=True)}
        leaves = self.leaves(X)
        vals = np.vectorize(lambda m, leaf: self._leaf_values[(m, leaf)])
        return vals(np.broadcast_to(np.arange(leaves.shape[1]), leaves.shape), leaves).astype(float)

    def raw_score(self, X):
        raw = self.booster.predict(self._dmatrix(X), output_margin=True)
        return raw.reshape(len(X), -1)


class LightGBMModel(TreeEnsemble):
    kind = "lightgbm"
    boosted = True
    accepts_nan = True

    def __init__(self, task, n_classes=0, seed=0, *, n_estimators: int = 50, learning_rate: float = 0.1,
                 num_leaves: int = 8, min_data_in_leaf: int = 5, reg_lambda: float = 0.0, **kw) -> None:
        super().__init__(task, n_classes, seed, n_estimators=n_estimators, **kw)
        self.learning_rate, self.num_leaves, self.min_data_in_leaf = learning_rate, num_leaves, min_data_in_leaf
        self.reg_lambda = reg_lambda
        self.booster = None
        k = self.n_outputs
        self.hess_scale = k / (k - 1) if k > 1 else 1.0  # lightgbm's multiclass hessian factor

    def params(self):
        return {**super().params(), "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
                "min_data_in_leaf": self.min_data_in_leaf, "reg_lambda": self.reg_lambda}

    def _lgb_params(self) -> dict:
        p = {"learning_rate": self.learning_rate, "num_leaves": self.num_leaves, "lambda_l2": self.reg_lambda,
             "min_data_in_leaf": self.min_data_in_leaf, "min_data_in_bin": 1, "seed": self.seed,
             "deterministic": True, "num_threads": 1, "force_col_wise": True, "verbose": -1, **self.extra}
        if self.task == "regression":
            p["objective"] = "regression"
        elif self.n_classes == 2:
            p["objective"] = "binary"
        else:
            p.update(objective="multiclass", num_class=self.n_classes)
        return p

    def fit(self, X, y, sample_weight=None):
        self._check_fit_input(X, y, sample_weight)
        import lightgbm as lgb

        ds = lgb.Dataset(X, label=y, weight=sample_weight, params={"verbose": -1})
        self.booster = lgb.train(self._lgb_params(), ds, num_boost_round=self.n_estimators)
        self.fitted = True
        return self

    @property
    def n_trees(self):
        return self.booster.num_trees()

    def leaves(self, X):
        self._require_fitted()
        return np.asarray(self.booster.predict(np.asarray(X, float), pred_leaf=True), dtype=np.int64).reshape(len(X), -1)

    def leaf_contributions(self, X):
        leaves = self.leaves(X)
        out = np.empty(leaves.shape)
        for m in range(leaves.shape[1]):
            uniq, inv = np.unique(leaves[:, m], return_inverse=True)
            out[:, m] = np.array([self.booster.get_leaf_output(m, int(leaf)) for leaf in uniq])[inv]
        return out

    def raw_score(self, X):
        self._require_fitted()
        return np.asarray(self.booster.predict(np.asarray(X, float), raw_score=True)).reshape(len(X), -1)


MODELS: dict[str, type[TabularModel]] = {}


def _register_models() -> None:
    from datablame.tabular.models_torch import LinearModel, MLPModel

    for cls in (LinearModel, MLPModel, RandomForestModel, GradientBoostingModel, XGBoostModel, LightGBMModel):
        MODELS[cls.kind] = cls


_register_models()


def make_model(kind: str, task: str, n_classes: int = 0, seed: int = 0, **kw) -> TabularModel:
    """A fresh, unfitted model of `kind` (one of MODELS)."""
    if kind not in MODELS:
        raise DatablameError(f"Unknown tabular model {kind!r}.", f"use one of {sorted(MODELS)}.")
    return MODELS[kind](task, n_classes, seed, **kw)

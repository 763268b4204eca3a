"""Load a user's fitted tabular model: XGBoost JSON/UBJ, LightGBM text, and scikit-learn joblib
files only when the caller trusts them (`trust_pickle=True`: unpickling runs arbitrary code).

The loaded model keeps the settings it was trained with (objective, classes, rounds, learning rate,
depth, L2), so `clone`/`fit_without` retrain it the same way for leave-one-out.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from datablame.errors import DatablameError
from datablame.tabular.model_base import TabularModel
from datablame.tabular.models_trees import (
    GradientBoostingModel,
    LightGBMModel,
    RandomForestModel,
    XGBoostModel,
)

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


def _xgb_task(objective: str, num_class: int) -> tuple[str, int]:
    if objective.startswith("binary:"):
        return "classification", 2
    if objective.startswith("multi:"):
        return "classification", num_class
    if objective.startswith("reg:squarederror"):
        return "regression", 0
    raise DatablameError(f"XGBoost objective {objective!r} is not supported.",
                         "train with binary:logistic, multi:softprob or reg:squarederror.")


def load_xgboost(path: Path) -> XGBoostModel:
    import xgboost as xgb

    try:
        booster = xgb.Booster(model_file=str(path))
    except xgb.core.XGBoostError as err:
        raise DatablameError(f"{path} is not a readable XGBoost model: {str(err).splitlines()[0]}",
                             "save it with booster.save_model('model.json') (or .ubj).") from err
    cfg = json.loads(booster.save_config())["learner"]
    objective = cfg["learner_train_param"]["objective"]
    task, k = _xgb_task(objective, int(cfg["learner_model_param"]["num_class"]))
    seed = int(cfg["generic_param"].get("seed", 0))
    saved = booster.attr("datablame_params")
    if saved:
        settings = json.loads(saved)
    else:  # a model trained elsewhere: the file has the trees but not the training settings
        settings = {"n_estimators": booster.num_boosted_rounds(), "max_depth": _tree_depth(booster, 6)}
        warnings.warn(f"{path} does not record its learning rate, L2 and depth; retraining (leave-one-out) "
                      f"and boostin assume XGBoost's defaults (eta 0.3, lambda 1) and the depth of its trees.",
                      stacklevel=3)
    model = XGBoostModel(task, k, seed, **settings)
    model.booster, model.fitted, model._leaf_values = booster, True, None
    return model


def _tree_depth(booster, fallback: int) -> int:
    """The deepest leaf of any tree (XGBoost dumps as JSON)."""
    def depth(node: dict) -> int:
        return 0 if "leaf" in node else 1 + max(depth(c) for c in node.get("children", []))

    try:
        return max(depth(json.loads(t)) for t in booster.get_dump(dump_format="json")) or 1
    except (ValueError, KeyError):
        return fallback


def load_lightgbm(path: Path) -> LightGBMModel:
    import lightgbm as lgb

    try:
        booster = lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as err:
        raise DatablameError(f"{path} is not a readable LightGBM model: {err}",
                             "save it with booster.save_model('model.txt').") from err
    p = booster.params or {}
    objective = str(p.get("objective", booster.dump_model().get("objective", "regression"))).split()[0]
    if objective in ("binary",):
        task, k = "classification", 2
    elif objective in ("multiclass", "softmax"):
        task, k = "classification", int(p.get("num_class", booster.dump_model()["num_class"]))
    elif objective in ("regression", "regression_l2", "l2", "mse"):
        task, k = "regression", 0
    else:
        raise DatablameError(f"LightGBM objective {objective!r} is not supported.",
                             "train with binary, multiclass or regression (L2).")
    model = LightGBMModel(task, k, int(p.get("seed", 0)), n_estimators=booster.current_iteration(),
                          learning_rate=float(p.get("learning_rate", 0.1)), num_leaves=int(p.get("num_leaves", 31)),
                          min_data_in_leaf=int(p.get("min_data_in_leaf", 20)),
                          reg_lambda=float(p.get("lambda_l2", 0.0)))
    model.booster, model.fitted = booster, True
    return model


def load_sklearn(path: Path, trust_pickle: bool) -> TabularModel:
    if not trust_pickle:
        raise DatablameError(f"{path} is a pickle (joblib) file; loading it runs any code it contains, so it is "
                             f"refused by default.",
                             "pass trust_pickle=True only for a file you made or trust, or save an XGBoost "
                             "(.json/.ubj) or LightGBM (.txt) model instead.")
    warnings.warn(f"Unpickling {path} (trust_pickle=True): this runs any code the file contains.", stacklevel=3)
    import joblib
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    est = joblib.load(path)
    task = "classification" if isinstance(est, (RandomForestClassifier, GradientBoostingClassifier)) else "regression"
    k = len(est.classes_) if task == "classification" else 0
    if isinstance(est, (RandomForestClassifier, RandomForestRegressor)):
        model: TabularModel = RandomForestModel(task, k, int(est.random_state or 0), n_estimators=est.n_estimators,
                                                min_samples_leaf=est.min_samples_leaf)
    elif isinstance(est, (GradientBoostingClassifier, GradientBoostingRegressor)):
        model = GradientBoostingModel(task, k, int(est.random_state or 0), n_estimators=est.n_estimators,
                                      learning_rate=est.learning_rate, max_depth=est.max_depth)
    else:
        raise DatablameError(f"{path} holds a {type(est).__name__}, not a scikit-learn random forest or gradient "
                             f"boosting model.", "save a RandomForest* or GradientBoosting* estimator.")
    model.estimator, model.fitted = est, True
    return model


def load_model(path: str | Path, *, trust_pickle: bool = False) -> TabularModel:
    """A fitted model from XGBoost .json/.ubj, LightGBM .txt, or (trusted) scikit-learn .joblib/.pkl."""
    path = Path(path)
    if not path.is_file():
        raise DatablameError(f"No model file at {path}.", "pass the path of a saved model file.")
    suffix = path.suffix.lower()
    if suffix in (".json", ".ubj"):
        return load_xgboost(path)
    if suffix == ".txt":
        return load_lightgbm(path)
    if suffix in PICKLE_SUFFIXES:
        return load_sklearn(path, trust_pickle)
    raise DatablameError(f"Unknown model format {suffix!r} for {path}.",
                         "use XGBoost .json/.ubj, LightGBM .txt, or scikit-learn .joblib with trust_pickle=True.")

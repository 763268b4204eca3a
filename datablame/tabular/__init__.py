"""Training-data attribution for tables: MLPs, linear models, random forests and gradient-boosted
trees, with exact leave-one-out retraining as ground truth.

    data            TableData: a DataFrame/CSV/Parquet encoded on its train split
    datasets        scikit-learn's bundled tables (no download)
    model_base      the one model interface and the per-row losses
    models_torch    MLP and L2-regularised linear/logistic models (torch, float64)
    models_trees    RandomForest, GradientBoosting, XGBoost, LightGBM; make_model
    loading         a user's saved model (pickle only when trusted)
    registry        the tabular methods' own registry; attribute(), suspicion()
    methods_grad | methods_tree | methods_baseline   the methods
    loo             exact leave-one-out and the removal test
    lds             the linear datamodeling score on M random subsets
    noise           label-noise detection
"""

from datablame.tabular.data import TableData, from_file, from_frame
from datablame.tabular.datasets import load_bundled
from datablame.tabular.lds import lds_check
from datablame.tabular.loading import load_model
from datablame.tabular.loo import agreement_with_loo, exact_loo, removal_test
from datablame.tabular.models_trees import MODELS, make_model
from datablame.tabular.noise import flip_labels, noise_detection
from datablame.tabular.registry import (
           TABULAR_METHODS,
           attribute,
           get_method,
           methods_for,
           skipped_for,
           suspicion,
)

__all__ = ["MODELS", "TABULAR_METHODS", "TableData", "agreement_with_loo", "attribute", "exact_loo", "flip_labels",
           "from_file", "from_frame", "get_method", "lds_check", "load_bundled", "load_model", "make_model",
           "methods_for", "noise_detection", "removal_test", "skipped_for", "suspicion"]

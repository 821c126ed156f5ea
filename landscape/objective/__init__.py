"""What is measured: a model, a loss and a data set, as one data-set mean every engine reads the same way.

    objective = Objective(model, loss_fn, data)      # loss_fn=None: the model's own loss (HF models)
    L(θ) = Σ_b w_b ℓ_b(θ) / Σ_b w_b                  # ℓ_b the batch mean, w_b its samples or tokens

`Batches` normalizes every accepted form of `data` (tensors, (X, y), TensorData, lists, DataLoaders, dict
batches); `select_params` is the one parameter selection; `kernels` says which attention kernel a
derivative can use.
"""

from landscape.objective.batches import Batch, Batches, concat, concatenable
from landscape.objective.kernels import is_attention_error, math_attention
from landscape.objective.objective import Objective, select_params
from landscape.objective.tasks import IGNORE, TASKS, logits_of, model_task

__all__ = ["IGNORE", "TASKS", "Batch", "Batches", "Objective", "concat", "concatenable", "is_attention_error",
           "logits_of", "math_attention", "model_task", "select_params"]

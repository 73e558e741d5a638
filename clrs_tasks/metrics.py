"""CLRS scores as dm-clrs' `evaluation.evaluate` computes them.

Predictions are first post-processed "hard" as `BaselineModel.predict` does
(`postprocess`, jittable): masks thresholded at logit 0, argmax for
mask_one, categorical and pointers, 50 Sinkhorn iterations then argmax for
permutation pointers. `score` then pools a whole split (run.py concatenates
all test batches before evaluating): a permutation pointer and its `_mask`
are fused into a node pointer; mask outputs score binary F1 over every
element, mask_one and categorical the accuracy of the argmax (rows holding
-1 are skipped), pointers exact-match accuracy, scalars the mean squared
error; `score` is the unweighted mean over the output probes.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from clrs_tasks import model as model_lib

_MASKED = -1


def postprocess(spec: model_lib.ModelSpec,
                preds: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Hard predictions from raw output predictions (see module docstring)."""
    types = {name: typ for name, _, _, typ, _ in spec}
    out = {}
    for name, pred in preds.items():
        typ = types[name]
        if typ == 'mask':
            out[name] = (pred > 0).astype(jnp.float32)
        elif typ in ('mask_one', 'categorical'):
            out[name] = jax.nn.one_hot(jnp.argmax(pred, -1), pred.shape[-1])
        elif typ == 'pointer':
            out[name] = jnp.argmax(pred, -1).astype(jnp.float32)
        elif typ == 'permutation_pointer':
            soft = jnp.exp(model_lib.log_sinkhorn(pred, 50, 0.1, None))
            out[name] = jax.nn.one_hot(jnp.argmax(soft, -1), pred.shape[-1])
        else:
            out[name] = pred
    return out


def _mask_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    valid = truth != _MASKED
    tp = np.sum((pred > 0.5) & (truth > 0.5) & valid)
    fp = np.sum((pred > 0.5) & (truth < 0.5) & valid)
    fn = np.sum((pred < 0.5) & (truth > 0.5) & valid)
    precision = tp / (tp + fp) if tp + fp > 0 else 1.0
    recall = tp / (tp + fn) if tp + fn > 0 else 1.0
    if precision + recall <= 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def _argmax_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    valid = np.all(truth != _MASKED, axis=-1)
    hits = (np.argmax(pred, -1) == np.argmax(truth, -1)) & valid
    return float(np.sum(hits) / np.sum(valid))


def _fuse_permutation(perm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Node pointer: self-pointer where the mask is on, else the argmax."""
    return np.where(mask > 0.5, np.arange(perm.shape[-1]),
                    np.argmax(perm, axis=-1))


def score(spec: model_lib.ModelSpec, truth: Mapping[str, np.ndarray],
          predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per-output scores and their mean `score`, pooled over all samples.

    Args:
      spec: the algorithm's probes.
      truth: output name -> ground truth, samples first (dm-clrs layout).
      predictions: output name -> hard predictions (`postprocess`), same
        samples in the same order.
    """
    types = {name: typ for name, stage, _, typ, _ in spec if stage == 'output'}
    scores = {}
    for name, typ in types.items():
        if (name.endswith('_mask') and
                types.get(name[:-5]) == 'permutation_pointer'):
            continue  # Scored with its permutation.
        want, got = np.asarray(truth[name]), np.asarray(predictions[name])
        if typ == 'permutation_pointer':
            want = _fuse_permutation(want, np.asarray(truth[name + '_mask']))
            got = _fuse_permutation(
                got, np.asarray(predictions[name + '_mask']))
            typ = 'pointer'
        if typ == 'mask':
            scores[name] = _mask_f1(got, want)
        elif typ in ('mask_one', 'categorical'):
            scores[name] = _argmax_accuracy(got, want)
        elif typ == 'pointer':
            scores[name] = float(np.mean(got == want))
        elif typ == 'scalar':
            scores[name] = float(np.mean((got - want) ** 2))
        else:
            raise ValueError(f'cannot score type {typ!r}')
    scores['score'] = sum(scores.values()) / len(scores)
    return scores

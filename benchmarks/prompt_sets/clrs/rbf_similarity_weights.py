"""Similarity-weighted aggregation: nodes are embedded into a small space,
each pair (j, k) gets weight exp(-||p_j - p_k||^2) normalised over k, and
the message to edge (i, j) is the weighted sum over k of features of the
edge (i, k) and node k. Then Dense(out_size).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    pos = nn.Dense(4)(z)                                        # [B, N, 4]
    sq_dist = jnp.sum((pos[:, :, None] - pos[:, None, :]) ** 2, axis=-1)
    weights = jax.nn.softmax(-sq_dist, axis=-1)                 # [B, j, k]
    vals = nn.Dense(nb_triplet_fts)(edge_fts) + nn.Dense(nb_triplet_fts)(z)[:, None]
    msgs = jnp.einsum('bjk,bikf->bijf', weights, vals)          # [B, i, j, f]
    msgs = msgs + nn.Dense(nb_triplet_fts)(graph_fts)[:, None, None]
    return nn.Dense(out_size)(nn.relu(msgs))

"""Graph-conditioned triplets (FiLM): the graph features produce a per-feature
scale and shift applied to the triplet tensor of node and edge terms; the
result is aggregated with both max and mean over the first node,
concatenated, and mapped to out_size.
"""
import flax.linen as nn
import jax.numpy as jnp


def film(x, cond, features):
    """x * (1 + gamma(cond)) + beta(cond), cond broadcast over the node axes."""
    gamma = nn.Dense(features, kernel_init=nn.initializers.zeros)(cond)
    beta = nn.Dense(features)(cond)
    shape = (cond.shape[0],) + (1,) * (x.ndim - 2) + (features,)
    return x * (1.0 + gamma.reshape(shape)) + beta.reshape(shape)


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    k = nb_triplet_fts
    nodes = nn.Dense(3 * k)(z)
    a, b, c = jnp.split(nodes, 3, axis=-1)
    e_ij = nn.Dense(k)(edge_fts)
    e_ik = nn.Dense(k)(edge_fts)
    t = (a[:, :, None, None] + b[:, None, :, None] + c[:, None, None, :]
         + e_ij[:, :, :, None] + e_ik[:, :, None, :])
    t = nn.relu(film(t, graph_fts, k))
    pooled = jnp.concatenate([t.max(axis=1), t.mean(axis=1)], axis=-1)
    return nn.Dense(out_size)(pooled)

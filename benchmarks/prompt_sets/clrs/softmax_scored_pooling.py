"""Learned pooling weights: a triplet tensor of node and edge terms is pooled
over the first node with softmax weights given by a scalar score per triple
(attention pooling), plus a residual edge term, then Dense(out_size).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    k = nb_triplet_fts
    left = nn.Dense(k)(z)
    right = nn.Dense(k)(z)
    link = nn.Dense(k)(edge_fts)
    # t[b, i, j, l] = left_i + right_l + link_ij + link_jl
    t = (jnp.expand_dims(left, (2, 3)) + jnp.expand_dims(right, (1, 2))
         + jnp.expand_dims(link, 3) + jnp.expand_dims(link, 1))
    t = nn.elu(t)
    score = nn.Dense(1)(t)                       # [B, i, j, l, 1]
    alpha = jax.nn.softmax(score, axis=1)        # normalise over i
    pooled = jnp.sum(alpha * t, axis=1)          # [B, j, l, k]
    pooled = pooled + nn.Dense(k)(edge_fts)
    return nn.Dense(out_size)(pooled)

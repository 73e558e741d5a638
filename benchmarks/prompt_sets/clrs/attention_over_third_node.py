"""Attention over the third node: each edge (i, j) forms a query from its edge
features and attends over all nodes k, with keys from the node features and
values from the node and edge (j, k) features; one head of width
nb_triplet_fts, then Dense(out_size).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    d = nb_triplet_fts
    query = nn.Dense(d)(edge_fts) + nn.Dense(d)(graph_fts)[:, None, None]  # [B, N, N, d]
    key = nn.Dense(d)(z)                                                   # [B, N, d]
    value = nn.Dense(d)(z)[:, None] + nn.Dense(d)(edge_fts)                # [B, N(j), N(k), d]
    logits = jnp.einsum('bijd,bkd->bijk', query, key) / jnp.sqrt(d)
    weights = jax.nn.softmax(logits, axis=-1)                              # over k
    attended = jnp.einsum('bijk,bjkd->bijd', weights, value)
    return nn.Dense(out_size)(attended)

"""Gated products with mean aggregation: for each triple (i, j, k) the value
tanh(u_j + v_k + w_jk) is multiplied by a sigmoid gate from the edge (i, j)
and node i; the gated values are averaged over i (not maxed), then mapped to
out_size.
"""
import flax.linen as nn
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    u = nn.Dense(nb_triplet_fts)(z)
    v = nn.Dense(nb_triplet_fts)(z)
    w = nn.Dense(nb_triplet_fts)(edge_fts)
    values = jnp.tanh(u[:, None, :, None] + v[:, None, None, :] + w[:, None])
    gate_logits = (nn.Dense(nb_triplet_fts)(edge_fts)
                   + nn.Dense(nb_triplet_fts)(z)[:, :, None])     # [B, i, j, k]
    gates = nn.sigmoid(gate_logits)[:, :, :, None]               # broadcast over k
    messages = jnp.mean(gates * values, axis=1)                  # [B, j, k, f]
    return nn.Dense(out_size)(messages)

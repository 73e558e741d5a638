"""Shortest-path-style messages: a Bellman-Ford / Floyd-Warshall relaxation in
feature space. The message to edge (i, k) is the elementwise minimum over
intermediate nodes j of f(e_ij) + g(e_jk) + h(z_j); edge-only apart from the
node term, then Dense(out_size).
"""
import flax.linen as nn
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    first_leg = nn.Dense(nb_triplet_fts)(edge_fts)     # e_ij -> [B, i, j, k]
    second_leg = nn.Dense(nb_triplet_fts)(edge_fts)    # e_jk -> [B, j, k, k]
    via = nn.Dense(nb_triplet_fts)(z)                  # z_j  -> [B, j, k]
    # paths[b, i, j, k] = first_leg[b, i, j] + second_leg[b, j, k] + via[b, j]
    paths = (first_leg[:, :, :, None, :]
             + second_leg[:, None, :, :, :]
             + via[:, None, :, None, :])
    relaxed = jnp.min(paths, axis=2)                   # min over the middle node j
    return nn.Dense(out_size)(relaxed)

"""MAXMEAN (EvoPrompting Listing 8), a discovered function: reference only.

v1 without the graph term (its projection is defined but never used, so it
has no parameters: -1,032); the triplets are clamped from below at -100,
then averaged (not maxed) over axis 1, then Dense(out_size).
"""
import flax.linen as nn
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    tri_1 = nn.Dense(nb_triplet_fts)(z)
    tri_2 = nn.Dense(nb_triplet_fts)(z)
    tri_3 = nn.Dense(nb_triplet_fts)(z)
    tri_e_1 = nn.Dense(nb_triplet_fts)(edge_fts)
    tri_e_2 = nn.Dense(nb_triplet_fts)(edge_fts)
    tri_e_3 = nn.Dense(nb_triplet_fts)(edge_fts)
    graph_proj = nn.Dense(nb_triplet_fts)  # Never applied, as in the paper.
    del graph_proj
    triplets = (
        jnp.expand_dims(tri_1, axis=(2, 3))        # (B, N, 1, 1, k)
        + jnp.expand_dims(tri_2, axis=(1, 3))      # (B, 1, N, 1, k)
        + jnp.expand_dims(tri_3, axis=(1, 2))      # (B, 1, 1, N, k)
        + jnp.expand_dims(tri_e_1, axis=3)         # (B, N, N, 1, k)
        + jnp.expand_dims(tri_e_2, axis=2)         # (B, N, 1, N, k)
        + jnp.expand_dims(tri_e_3, axis=1))        # (B, 1, N, N, k)
    triplets = jnp.maximum(triplets, -100.0)
    return nn.Dense(out_size)(jnp.mean(triplets, axis=1))  # (B, N, N, out)

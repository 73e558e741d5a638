"""CONCATREP (EvoPrompting Listing 7), a discovered function: reference only.

Every projection is concat[MLP([size])(x), MLP([4 size, size])(x)] (twice
as wide); max over axis 1 and Dense(out_size) as in v1. +44,056 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


def mlp(x, sizes):
    """Dense layers with ReLU between them."""
    for i, size in enumerate(sizes):
        x = nn.Dense(size)(x)
        if i < len(sizes) - 1:
            x = nn.relu(x)
    return x


def rep(x, size):
    return jnp.concatenate([mlp(x, (size,)), mlp(x, (4 * size, size))],
                           axis=-1)


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    tri_1 = rep(z, nb_triplet_fts)
    tri_2 = rep(z, nb_triplet_fts)
    tri_3 = rep(z, nb_triplet_fts)
    tri_e_1 = rep(edge_fts, nb_triplet_fts)
    tri_e_2 = rep(edge_fts, nb_triplet_fts)
    tri_e_3 = rep(edge_fts, nb_triplet_fts)
    tri_g = rep(graph_fts, nb_triplet_fts)
    triplets = (
        jnp.expand_dims(tri_1, axis=(2, 3))        # (B, N, 1, 1, 2k)
        + jnp.expand_dims(tri_2, axis=(1, 3))      # (B, 1, N, 1, 2k)
        + jnp.expand_dims(tri_3, axis=(1, 2))      # (B, 1, 1, N, 2k)
        + jnp.expand_dims(tri_e_1, axis=3)         # (B, N, N, 1, 2k)
        + jnp.expand_dims(tri_e_2, axis=2)         # (B, N, 1, N, 2k)
        + jnp.expand_dims(tri_e_3, axis=1)         # (B, 1, N, N, 2k)
        + jnp.expand_dims(tri_g, axis=(1, 2, 3)))  # (B, 1, 1, 1, 2k)
    return nn.Dense(out_size)(jnp.max(triplets, axis=1))  # (B, N, N, out)

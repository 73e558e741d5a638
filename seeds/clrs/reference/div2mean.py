"""DIV2MEAN (EvoPrompting Listing 9), a discovered function: reference only.

Node projections of z / 2, no graph term (-1,032 parameters), mean instead
of max over axis 1, then Dense(out_size).
"""
import flax.linen as nn
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    half_z = z / 2
    tri_1 = nn.Dense(nb_triplet_fts)(half_z)
    tri_2 = nn.Dense(nb_triplet_fts)(half_z)
    tri_3 = nn.Dense(nb_triplet_fts)(half_z)
    tri_e_1 = nn.Dense(nb_triplet_fts)(edge_fts)
    tri_e_2 = nn.Dense(nb_triplet_fts)(edge_fts)
    tri_e_3 = nn.Dense(nb_triplet_fts)(edge_fts)
    triplets = (
        jnp.expand_dims(tri_1, axis=(2, 3))        # (B, N, 1, 1, k)
        + jnp.expand_dims(tri_2, axis=(1, 3))      # (B, 1, N, 1, k)
        + jnp.expand_dims(tri_3, axis=(1, 2))      # (B, 1, 1, N, k)
        + jnp.expand_dims(tri_e_1, axis=3)         # (B, N, N, 1, k)
        + jnp.expand_dims(tri_e_2, axis=2)         # (B, N, 1, N, k)
        + jnp.expand_dims(tri_e_3, axis=1))        # (B, 1, N, N, k)
    return nn.Dense(out_size)(jnp.mean(triplets, axis=1))  # (B, N, N, out)

"""QUADNODEMINMAX (EvoPrompting Listing 6), a discovered function: reference only.

Four node projections (no edge or graph terms), max minus min over axis 1.
As printed in the paper there is no output layer: the messages are
nb_triplet_fts wide, not out_size (the decoders read them at that width,
which the paper's model sizes confirm).
"""
import flax.linen as nn
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    tri_1 = nn.Dense(nb_triplet_fts)(z)
    tri_2 = nn.Dense(nb_triplet_fts)(z)
    tri_3 = nn.Dense(nb_triplet_fts)(z)
    tri_4 = nn.Dense(nb_triplet_fts)(z)
    triplets = (
        jnp.expand_dims(tri_1, axis=(1, 2))        # (B, 1, 1, N, k)
        + jnp.expand_dims(tri_2, axis=(1, 3))      # (B, 1, N, 1, k)
        + jnp.expand_dims(tri_3, axis=(2, 3))      # (B, N, 1, 1, k)
        + jnp.expand_dims(tri_4, axis=(3, 1)))     # (B, 1, N, 1, k)
    return jnp.max(triplets, axis=1) - jnp.min(triplets, axis=1)  # (B, N, N, k)

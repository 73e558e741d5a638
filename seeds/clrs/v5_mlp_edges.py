"""v5: v1 with the edge projections as MLP([nb_triplet_fts, nb_triplet_fts]).

Otherwise as v1_standard (EvoPrompting Appendix A.5).
"""
import flax.linen as nn
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    tri_1 = nn.Dense(nb_triplet_fts)(z)
    tri_2 = nn.Dense(nb_triplet_fts)(z)
    tri_3 = nn.Dense(nb_triplet_fts)(z)
    tri_e_1 = mlp(edge_fts, (nb_triplet_fts, nb_triplet_fts))
    tri_e_2 = mlp(edge_fts, (nb_triplet_fts, nb_triplet_fts))
    tri_e_3 = mlp(edge_fts, (nb_triplet_fts, nb_triplet_fts))
    tri_g = nn.Dense(nb_triplet_fts)(graph_fts)
    triplets = (
        jnp.expand_dims(tri_1, axis=(2, 3))        # (B, N, 1, 1, k)
        + jnp.expand_dims(tri_2, axis=(1, 3))      # (B, 1, N, 1, k)
        + jnp.expand_dims(tri_3, axis=(1, 2))      # (B, 1, 1, N, k)
        + jnp.expand_dims(tri_e_1, axis=3)         # (B, N, N, 1, k)
        + jnp.expand_dims(tri_e_2, axis=2)         # (B, N, 1, N, k)
        + jnp.expand_dims(tri_e_3, axis=1)         # (B, 1, N, N, k)
        + jnp.expand_dims(tri_g, axis=(1, 2, 3)))  # (B, 1, 1, 1, k)
    return nn.Dense(out_size)(jnp.max(triplets, axis=1))  # (B, N, N, out)


def mlp(x, sizes):
    """Dense layers with ReLU between them."""
    for i, size in enumerate(sizes):
        x = nn.Dense(size)(x)
        if i < len(sizes) - 1:
            x = nn.relu(x)
    return x

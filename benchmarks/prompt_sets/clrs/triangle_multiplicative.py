"""A triangle multiplicative update (AlphaFold 2 style) as the triplet message:
LayerNorm the edge features, form sigmoid-gated "outgoing" projections a_ij
and b_kj, combine them as sum_j a_ij * b_kj (an einsum over the shared node),
LayerNorm, and gate the output with sigmoid(Dense(edge)).
"""
import flax.linen as nn
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    e = nn.LayerNorm()(edge_fts)
    a = nn.Dense(nb_triplet_fts)(e) * nn.sigmoid(nn.Dense(nb_triplet_fts)(e))
    b = nn.Dense(nb_triplet_fts)(e) * nn.sigmoid(nn.Dense(nb_triplet_fts)(e))
    # Nodes enter through a rescaling of the shared index j.
    a = a * (1.0 + nn.Dense(nb_triplet_fts)(z))[:, None, :, :]
    tri = jnp.einsum('bijc,bkjc->bikc', a, b) / z.shape[1]
    tri = nn.LayerNorm()(tri)
    gate = nn.sigmoid(nn.Dense(out_size)(e))
    return gate * nn.Dense(out_size)(tri)

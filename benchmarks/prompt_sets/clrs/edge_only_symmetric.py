"""No triplets at all: an edge-only message built from the edge features and
their transpose (e_ij and e_ji), the two endpoint nodes and the graph
features, mixed by a small MLP with LayerNorm. Cheap: O(N^2) memory.
"""
import flax.linen as nn
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    hidden = 4 * nb_triplet_fts
    forward = nn.Dense(hidden)(edge_fts)
    backward = nn.Dense(hidden)(jnp.swapaxes(edge_fts, 1, 2))
    sender = nn.Dense(hidden)(z)[:, :, None, :]
    receiver = nn.Dense(hidden)(z)[:, None, :, :]
    context = nn.Dense(hidden)(graph_fts)[:, None, None, :]
    h = nn.gelu(forward + backward + sender + receiver + context)
    h = nn.LayerNorm()(h)
    return nn.Dense(out_size)(h)

"""An MLP on each triple: small projections of node i, node j, node k and of
the edges (i, j) and (j, k) are broadcast to [B, N, N, N, .] and
concatenated, passed through Dense(2k) -> ReLU -> Dense(k), then summed over
j and normalised with LayerNorm before the output layer.
"""
import flax.linen as nn
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    b, n = z.shape[0], z.shape[1]
    k = nb_triplet_fts
    full = (b, n, n, n, k)
    parts = [
        jnp.broadcast_to(nn.Dense(k)(z)[:, :, None, None], full),          # node i
        jnp.broadcast_to(nn.Dense(k)(z)[:, None, :, None], full),          # node j
        jnp.broadcast_to(nn.Dense(k)(z)[:, None, None, :], full),          # node k
        jnp.broadcast_to(nn.Dense(k)(edge_fts)[:, :, :, None], full),      # edge (i, j)
        jnp.broadcast_to(nn.Dense(k)(edge_fts)[:, None, :, :], full),      # edge (j, k)
    ]
    h = jnp.concatenate(parts, axis=-1)          # [B, i, j, k, 5k]
    h = nn.Dense(k)(nn.relu(nn.Dense(2 * k)(h)))
    h = nn.LayerNorm()(jnp.sum(h, axis=2))       # sum over the middle node j
    return nn.Dense(out_size)(h)

"""v8: no triplets: Dense(out_size) of the node features, tiled over a new axis.

The message to edge (i, j) depends on node j only (EvoPrompting Appendix A.5).
"""
import flax.linen as nn
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    num_nodes = z.shape[1]
    msgs = nn.Dense(out_size)(z)                           # (B, N, out)
    return jnp.tile(jnp.expand_dims(msgs, axis=1),
                    (1, num_nodes, 1, 1))                   # (B, N, N, out)

"""A smooth maximum: triplet scores from node, edge and graph projections are
aggregated with a temperature-scaled logsumexp over the first node (a soft
version of max aggregation, with a learned temperature per feature), then a
two-layer output map.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    k = nb_triplet_fts
    src = nn.Dense(k, name='src')(z)
    dst = nn.Dense(k, name='dst')(z)
    pair = nn.Dense(k, name='pair')(edge_fts)
    glob = nn.Dense(k, name='glob')(graph_fts)
    # scores[b, i, j, l] for edge (j, l) seen from node i
    scores = (src[:, :, None, None] + dst[:, None, None, :]
              + pair[:, :, :, None] + glob[:, None, None, None])
    log_temp = nn.Dense(k, name='temperature')(graph_fts)[:, None, None, None]
    temp = jax.nn.softplus(log_temp) + 0.1
    soft = temp[:, 0] * jax.nn.logsumexp(scores / temp, axis=1)
    hidden = nn.relu(nn.Dense(2 * k)(soft))
    return nn.Dense(out_size)(hidden)

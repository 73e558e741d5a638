"""Triplet messages with a helper: every projection goes through `proj`, a
Dense without bias; the triple combines tanh(node terms) with a sigmoid
gate from the two edges, and max over the first node. Two-space indentation.
"""
import flax.linen as nn
import jax.numpy as jnp


def proj(x, size):
  """A bias-free linear map of the last axis."""
  return nn.Dense(size, use_bias=False)(x)


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
  n1 = proj(z, nb_triplet_fts)[:, :, None, None]   # node i
  n2 = proj(z, nb_triplet_fts)[:, None, :, None]   # node j
  n3 = proj(z, nb_triplet_fts)[:, None, None, :]   # node k
  g = proj(graph_fts, nb_triplet_fts)[:, None, None, None]
  content = jnp.tanh(n1 + n2 + n3 + g)
  # the gate looks at both edges leaving i
  gate = nn.sigmoid(proj(edge_fts, nb_triplet_fts)[:, :, :, None]
                    + proj(edge_fts, nb_triplet_fts)[:, :, None, :])
  pooled = jnp.max(content * gate, axis=1)
  return nn.Dense(out_size)(pooled)

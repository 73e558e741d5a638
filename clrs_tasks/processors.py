"""CLRS processors in flax: (gated) MPNN / PGN with an evolvable triplet slot.

A port of dm-clrs' `processors.PGN` family (Ibarz et al. 2022). One step:

  z = [node_fts || hidden]                                        [B, N, 2H]
  m_ij = MLP([H, H])(relu(W1 z_j + W2 z_i + We e_ij + Wg g))  (i sends to j)
  m_j = max over senders i allowed by the adjacency
  h_j = LayerNorm(relu(O1 z_j + O2 m_j))
  gated: h_j <- s_j * h_j + (1 - s_j) * hidden_j,
         s_j = sigmoid(G3 relu(G1 z_j + G2 m_j)), G3's bias starting at -3.

With triplets, the processor also returns edge latents
`relu(get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, H))`, which
only the decoders read (as in dm-clrs). The triplet-message function is the
slot the search evolves; its contract (EvoPrompting, section 4.2) is
`TRIPLET_CONTRACT` below. The standard function of Ibarz et al. is the seed
`seeds/clrs/v1_standard.py`.

Processor kinds (`PROCESSORS`): the adjacency is 'full' for MPNN (every node
sends to every node), 'graph' for PGN (the adjacency built from the inputs
and hints), 'self' for DeepSets; a `g` prefix means gated, `triplet_` means
triplet edge messages. The paper's processor is 'triplet_gmpnn'. dm-clrs'
`*_mask` variants (logits masked outside the adjacency), GAT and MemNet are
not ported.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

TRIPLET_CONTRACT = (
    'The program defines a function `get_triplet_msgs(z, edge_fts, graph_fts,'
    ' nb_triplet_fts, out_size)` (flax.linen is imported as `nn`; `jax` and'
    ' `jax.numpy as jnp` are imported too). It runs inside a flax module, so'
    ' it creates its layers inline, e.g. `nn.Dense(nb_triplet_fts)(z)`.'
    ' Inputs: node features z [B, N, 2H] (node embeddings concatenated with'
    ' the previous hidden state), edge features edge_fts [B, N, N, H], graph'
    ' features graph_fts [B, H]; nb_triplet_fts = 8 and out_size = H = 128.'
    ' It returns the edge messages [B, N, N, F] (F = out_size in the standard'
    ' function): for every triple of nodes it combines node, edge and graph'
    ' projections into a [B, N, N, N, k] tensor, aggregates over axis 1 and'
    ' maps the result to the output size. A ReLU is applied to its result.')

# The first line of every triplet program the LM writes (the prompt's last).
TRIPLET_OPENING = (
    'def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):')
# get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size).
TripletFn = Callable[[jax.Array, jax.Array, jax.Array, int, int], jax.Array]

_BIG_NUMBER = 1e6


class MLP(nn.Module):
    """Dense layers with ReLU between them (haiku's `hk.nets.MLP`)."""

    sizes: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, size in enumerate(self.sizes):
            x = nn.Dense(size)(x)
            if i < len(self.sizes) - 1:
                x = nn.relu(x)
        return x


class TripletMessages(nn.Module):
    """Runs a triplet-message function; its layers live in this scope."""

    triplet_fn: TripletFn
    nb_triplet_fts: int
    out_size: int

    @nn.compact
    def __call__(self, z, edge_fts, graph_fts):
        return self.triplet_fn(z, edge_fts, graph_fts, self.nb_triplet_fts,
                               self.out_size)


class PGN(nn.Module):
    """One (gated) MPNN/PGN step, optionally with triplet edge messages.

    Attributes:
      out_size: H, the hidden size.
      adjacency: 'graph' (PGN: messages along `adj_mat`), 'full' (MPNN) or
        'self' (DeepSets).
      gated: whether the update is gated.
      use_ln: layer norm on the update.
      triplet_fn: None, or the triplet-message function (see TripletFn).
      nb_triplet_fts: k, the triplet feature size passed to `triplet_fn`.
    """

    out_size: int
    adjacency: str = 'graph'
    gated: bool = False
    use_ln: bool = True
    triplet_fn: TripletFn | None = None
    nb_triplet_fts: int = 8

    @nn.compact
    def __call__(self, node_fts: jax.Array, edge_fts: jax.Array,
                 graph_fts: jax.Array, adj_mat: jax.Array,
                 hidden: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """Returns (node embeddings [B, N, H], edge latents [B, N, N, F] or None)."""
        b, n, _ = node_fts.shape
        if edge_fts.shape[:-1] != (b, n, n) or graph_fts.shape[:-1] != (b,):
            raise ValueError(
                f'inconsistent shapes: nodes {node_fts.shape}, edges '
                f'{edge_fts.shape}, graph {graph_fts.shape}')
        if self.adjacency == 'full':
            adj_mat = jnp.ones_like(adj_mat)
        elif self.adjacency == 'self':
            adj_mat = jnp.broadcast_to(jnp.eye(n, dtype=adj_mat.dtype),
                                       adj_mat.shape)
        elif self.adjacency != 'graph':
            raise ValueError(f'unknown adjacency {self.adjacency!r}')
        h = self.out_size
        z = jnp.concatenate([node_fts, hidden], axis=-1)
        msg_1 = nn.Dense(h, name='m_1')(z)
        msg_2 = nn.Dense(h, name='m_2')(z)
        msg_e = nn.Dense(h, name='m_e')(edge_fts)
        msg_g = nn.Dense(h, name='m_g')(graph_fts)

        tri_msgs = None
        if self.triplet_fn is not None:
            tri_msgs = nn.relu(TripletMessages(
                self.triplet_fn, self.nb_triplet_fts, h, name='triplet')(
                    z, edge_fts, graph_fts))

        msgs = (msg_1[:, None] + msg_2[:, :, None] + msg_e
                + msg_g[:, None, None])
        msgs = MLP((h, h), name='msgs_mlp')(nn.relu(msgs))
        msgs = jnp.max(jnp.where(adj_mat[..., None] > 0, msgs, -_BIG_NUMBER),
                       axis=1)

        ret = nn.relu(nn.Dense(h, name='o1')(z) + nn.Dense(h, name='o2')(msgs))
        if self.use_ln:
            ret = nn.LayerNorm(name='ln')(ret)
        if self.gated:
            gate = nn.relu(nn.Dense(h, name='gate1')(z)
                           + nn.Dense(h, name='gate2')(msgs))
            gate = jax.nn.sigmoid(nn.Dense(
                h, bias_init=nn.initializers.constant(-3.0),
                name='gate3')(gate))
            ret = ret * gate + hidden * (1 - gate)
        return ret, tri_msgs


@dataclasses.dataclass(frozen=True)
class ProcessorKind:
    """A named processor configuration (see the module docstring)."""

    adjacency: str
    gated: bool
    triplets: bool


PROCESSORS = {
    'deepsets': ProcessorKind('self', gated=False, triplets=False),
    'mpnn': ProcessorKind('full', gated=False, triplets=False),
    'pgn': ProcessorKind('graph', gated=False, triplets=False),
    'gmpnn': ProcessorKind('full', gated=True, triplets=False),
    'gpgn': ProcessorKind('graph', gated=True, triplets=False),
    'triplet_mpnn': ProcessorKind('full', gated=False, triplets=True),
    'triplet_pgn': ProcessorKind('graph', gated=False, triplets=True),
    'triplet_gmpnn': ProcessorKind('full', gated=True, triplets=True),
    'triplet_gpgn': ProcessorKind('graph', gated=True, triplets=True),
}


def make_processor(kind: str, hidden_dim: int, *,
                   triplet_fn: TripletFn | None = None,
                   nb_triplet_fts: int = 8, use_ln: bool = True,
                   **module_kwargs: Any) -> PGN:
    """The processor `kind` (a key of PROCESSORS) of width `hidden_dim`.

    Raises:
      ValueError: unknown kind, or a triplet kind without `triplet_fn`.
    """
    if kind not in PROCESSORS:
        raise ValueError(f'unknown processor {kind!r}; one of {sorted(PROCESSORS)}')
    spec = PROCESSORS[kind]
    if spec.triplets and triplet_fn is None:
        raise ValueError(f'processor {kind!r} needs a triplet_fn')
    return PGN(out_size=hidden_dim, adjacency=spec.adjacency, gated=spec.gated,
               use_ln=use_ln,
               triplet_fn=triplet_fn if spec.triplets else None,
               nb_triplet_fts=nb_triplet_fts, **module_kwargs)


PREAMBLE = 'import jax\nimport jax.numpy as jnp\nimport flax.linen as nn\n'


def trusted_triplet_fn(source: str) -> TripletFn:
    """`get_triplet_msgs` of a trusted program (a seed or reference program).

    Executes `source` in this process: never call it on generated code,
    which only runs in sandbox workers.
    """
    namespace: dict[str, Any] = {}
    exec(compile(PREAMBLE + source, '<triplet program>', 'exec'), namespace)  # pylint: disable=exec-used
    fn = namespace.get('get_triplet_msgs')
    if not callable(fn):
        raise ValueError('the program defines no get_triplet_msgs function')
    return fn

"""Encode-process-decode for CLRS in flax (a port of dm-clrs' `nets.Net`).

Per step t of an algorithm's trajectory (Ibarz et al. 2022, with dm-clrs'
`hint_mode='encoded_decoded'`):

 1. encoders sum linear embeddings of the inputs and of the current hints
    into node [B, N, H], edge [B, N, N, H] and graph [B, H] features; the
    adjacency starts as the identity and grows from pointer probes and edge
    masks;
 2. the processor (see `processors.py`) maps them and the previous hidden
    state to the next hidden state and, with triplets, edge latents;
 3. decoders read [node_fts || hidden || next hidden] and
    [edge_fts || edge latents] and predict the next hints and the outputs.

The hint fed at step 0 is the ground truth; later steps are fed the
model's own previous hint predictions, soft (sigmoid / softmax), except
that while training each graph gets the ground truth instead with
probability `hint_teacher_forcing` (dm-clrs' run.py default is 0). Output
predictions are taken at each graph's last step (`lengths`).

Probe types: scalar, mask, mask_one, categorical, pointer (node, edge and
graph located) and permutation_pointer (node pointers decoded through a
Sinkhorn operator, with Gumbel noise while training; rng stream 'noise').
dm-clrs' `*_mask` processors (logits masked outside the adjacency), LSTM and
dropout options are not ported (all off in the recipe).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from clrs_tasks import data as data_lib
from clrs_tasks import processors

Array = jax.Array
# (name, stage, location, type, width) per probe: width is the class count
# of categorical probes, else 0. A tuple, so modules stay hashable.
ModelSpec = tuple[tuple[str, str, str, str, int], ...]

POINTER_TYPES = ('pointer', 'permutation_pointer')


def model_spec(dataset: data_lib.Dataset) -> ModelSpec:
    """The probes of `dataset` with categorical widths, in spec order."""
    rows = []
    for name, (stage, loc, typ) in dataset.spec.items():
        width = 0
        if typ == 'categorical':
            probes = {'input': dataset.inputs, 'output': dataset.outputs,
                      'hint': dataset.hints}[stage]
            width = int(probes[name].shape[-1])
        rows.append((name, stage, loc, typ, width))
    return tuple(rows)


def log_sinkhorn(x: Array, steps: int, temperature: float,
                 noise_key: Array | None) -> Array:
    """Log of a doubly stochastic matrix from logits [..., N, N] (zero diagonal)."""
    if noise_key is not None:
        u = jax.random.uniform(noise_key, x.shape)
        x = x - jnp.log(-jnp.log(u + 1e-12) + 1e-12)
    x = x / temperature - 1e6 * jnp.eye(x.shape[-1])
    for _ in range(steps):
        x = jax.nn.log_softmax(x, axis=-1)
        x = jax.nn.log_softmax(x, axis=-2)
    return x


def soft_hint(typ: str, pred: Array) -> Array:
    """A hint prediction turned into the encoders' input form (soft)."""
    if typ == 'mask':
        return jax.nn.sigmoid(pred)
    if typ in ('mask_one', 'categorical', 'pointer'):
        return jax.nn.softmax(pred, axis=-1)
    if typ == 'permutation_pointer':
        return jnp.exp(log_sinkhorn(pred, 25, 0.1, None))
    return pred  # scalar


def encoder_input(typ: str, x: Array, num_nodes: int) -> Array:
    """Ground-truth probe data in the encoders' input form (pointers one-hot)."""
    if typ == 'pointer':
        return jax.nn.one_hot(x, num_nodes)
    return x.astype(jnp.float32)


class Step(nn.Module):
    """One step: encode inputs and hints, process, decode hints and outputs."""

    spec: ModelSpec
    hidden_dim: int
    processor_kind: str
    triplet_fn: processors.TripletFn | None
    nb_triplet_fts: int
    use_ln: bool
    encoder_init: str

    def setup(self):
        self.processor = processors.make_processor(
            self.processor_kind, self.hidden_dim, triplet_fn=self.triplet_fn,
            nb_triplet_fts=self.nb_triplet_fts, use_ln=self.use_ln)
        encoders, decoders = {}, {}
        for name, stage, loc, typ, width in self.spec:
            if stage in ('input', 'hint'):
                init = nn.linear.default_kernel_init
                if (self.encoder_init == 'xavier_on_scalars' and
                        stage == 'hint' and typ == 'scalar'):
                    init = nn.initializers.truncated_normal(
                        1.0 / self.hidden_dim ** 0.5)
                count = 2 if (loc == 'edge' and typ == 'pointer') else 1
                encoders[name] = tuple(
                    nn.Dense(self.hidden_dim, kernel_init=init,
                             name=f'{name}_enc_{i}') for i in range(count))
            if stage in ('output', 'hint'):
                decoders[name] = tuple(
                    nn.Dense(size, name=f'{name}_dec_{i}')
                    for i, size in enumerate(self._decoder_sizes(loc, typ,
                                                                 width)))
        self.encoders = encoders
        self.decoders = decoders

    def _decoder_sizes(self, loc: str, typ: str, width: int) -> tuple[int, ...]:
        h = self.hidden_dim
        out = width if typ == 'categorical' else 1
        if typ not in ('scalar', 'mask', 'mask_one', 'categorical',
                       'pointer', 'permutation_pointer'):
            raise ValueError(f'unsupported probe type {typ!r}')
        pointer = typ in POINTER_TYPES
        if loc == 'node':
            return (h, h, h, 1) if pointer else (out,)
        if loc == 'edge':
            return (h, h, h, h, 1) if pointer else (out, out, out)
        if loc == 'graph':
            return (1, 1, 1) if pointer else (out, out)
        raise ValueError(f'unknown location {loc!r}')

    def _encode(self, probes: Mapping[str, Array], batch_size: int,
                num_nodes: int):
        h = self.hidden_dim
        node_fts = jnp.zeros((batch_size, num_nodes, h))
        edge_fts = jnp.zeros((batch_size, num_nodes, num_nodes, h))
        graph_fts = jnp.zeros((batch_size, h))
        adj_mat = jnp.broadcast_to(jnp.eye(num_nodes),
                                   (batch_size, num_nodes, num_nodes))
        for name, _, loc, typ, _ in self.spec:
            if name not in probes:
                continue
            x = probes[name]  # Encoder input form; pointers one-hot.
            enc = self.encoders[name]
            pointer = typ in POINTER_TYPES
            if loc == 'node' and pointer:
                adj_mat = adj_mat + ((x + jnp.swapaxes(x, 1, 2)) > 0.5)
            elif loc == 'edge' and typ == 'mask':
                adj_mat = adj_mat + ((x + jnp.swapaxes(x, 1, 2)) > 0.0)
            embedded = enc[0](x if typ == 'categorical' else x[..., None])
            if loc == 'node' and pointer:
                edge_fts = edge_fts + embedded
            elif loc == 'node' or (loc == 'graph' and pointer):
                node_fts = node_fts + embedded
            elif loc == 'edge' and typ == 'pointer':
                edge_fts = (edge_fts + jnp.mean(embedded, axis=1)
                            + jnp.mean(enc[1](x[..., None]), axis=2))
            elif loc == 'edge':
                edge_fts = edge_fts + embedded
            else:
                graph_fts = graph_fts + embedded
        return node_fts, edge_fts, graph_fts, (adj_mat > 0).astype(jnp.float32)

    def _decode(self, loc: str, typ: str, dec, h_t: Array, e_t: Array,
                graph_fts: Array, train: bool) -> Array:
        pointer = typ in POINTER_TYPES
        if loc == 'node':
            if not pointer:
                pred = dec[0](h_t)
                return pred if typ == 'categorical' else pred[..., 0]
            p_1, p_2, p_3 = dec[0](h_t), dec[1](h_t), dec[2](e_t)
            p_e = p_2[:, :, None] + p_3
            p_m = jnp.maximum(p_1[:, :, None], jnp.swapaxes(p_e, 1, 2))
            pred = dec[3](p_m)[..., 0]
            if typ == 'permutation_pointer':
                pred = log_sinkhorn(pred, 10, 0.1,
                                    self.make_rng('noise') if train else None)
            return pred
        if loc == 'edge':
            pred = (dec[0](h_t)[:, :, None] + dec[1](h_t)[:, None]
                    + dec[2](e_t))
            if typ == 'categorical':
                return pred
            if not pointer:
                return pred[..., 0]
            p_m = jnp.maximum(pred[:, :, :, None],
                              dec[3](h_t)[:, None, None])
            return dec[4](p_m)[..., 0]
        pred = dec[0](jnp.max(h_t, axis=-2)) + dec[1](graph_fts)
        if typ == 'categorical':
            return pred
        if not pointer:
            return pred[..., 0]
        return pred + jnp.swapaxes(dec[2](h_t), 1, 2)[:, 0]

    def __call__(self, inputs: Mapping[str, Array], hints: Mapping[str, Array],
                 hidden: Array, train: bool):
        """One step on encoder-form `inputs` and `hints`.

        Returns:
          (next hidden [B, N, H], hint predictions, output predictions), the
          predictions raw (logits; log-Sinkhorn for permutation pointers).
        """
        batch_size, num_nodes = hidden.shape[:2]
        node_fts, edge_fts, graph_fts, adj_mat = self._encode(
            {**inputs, **hints}, batch_size, num_nodes)
        nxt_hidden, nxt_edge = self.processor(node_fts, edge_fts, graph_fts,
                                              adj_mat, hidden)
        if nxt_edge is not None and nxt_edge.shape[:-1] != edge_fts.shape[:-1]:
            raise ValueError(
                f'the processor returned edge messages of shape '
                f'{nxt_edge.shape}, expected [{batch_size}, {num_nodes}, '
                f'{num_nodes}, F]')
        h_t = jnp.concatenate([node_fts, hidden, nxt_hidden], axis=-1)
        e_t = (edge_fts if nxt_edge is None else
               jnp.concatenate([edge_fts, nxt_edge], axis=-1))
        hint_preds, output_preds = {}, {}
        for name, stage, loc, typ, _ in self.spec:
            if stage == 'input':
                continue
            pred = self._decode(loc, typ, self.decoders[name], h_t, e_t,
                                graph_fts, train)
            (hint_preds if stage == 'hint' else output_preds)[name] = pred
        return nxt_hidden, hint_preds, output_preds


class EncodeProcessDecode(nn.Module):
    """The CLRS baseline network over a `GraphBatch` (see module docstring).

    Attributes:
      spec: the algorithm's probes (`model_spec`).
      processor_kind: a key of `processors.PROCESSORS`.
      triplet_fn: the triplet-message function, for triplet processors.
      nb_triplet_fts: its triplet feature size k.
      use_ln: layer norm in the processor.
      hidden_dim: H.
      hint_teacher_forcing: probability, per graph and step, of feeding the
        ground-truth hint instead of the model's prediction while training.
      encoder_init: 'xavier_on_scalars' (dm-clrs' default) or 'default'.
    """

    spec: ModelSpec
    processor_kind: str = 'triplet_gmpnn'
    triplet_fn: processors.TripletFn | None = None
    nb_triplet_fts: int = 8
    use_ln: bool = True
    hidden_dim: int = 128
    hint_teacher_forcing: float = 0.0
    encoder_init: str = 'xavier_on_scalars'

    @nn.compact
    def __call__(self, batch: data_lib.GraphBatch, *, train: bool
                 ) -> tuple[dict[str, Array], dict[str, Array]]:
        """Predictions for `batch`.

        Returns:
          (outputs, hints): raw output predictions per output probe
          ([G, N] / [G, N, N] / [G] plus class or pointer axes), taken at
          each graph's last step; raw hint predictions [T - 1, G, ...] for
          steps 1..T-1.
        """
        num_nodes, num_graphs = batch.num_nodes, batch.num_graphs
        types = {name: typ for name, _, _, typ, _ in self.spec}
        inputs = {name: encoder_input(types[name], x, num_nodes)
                  for name, (_, x) in data_lib.to_dense(batch, 'input').items()}
        true_hints = {name: encoder_input(types[name], x, num_nodes)
                      for name, (_, x) in data_lib.to_dense(batch,
                                                            'hint').items()}
        num_steps = max(1, batch.num_steps - 1)
        lengths = batch.lengths

        step_fn = nn.scan(
            _ScanBody, variable_broadcast='params',
            split_rngs={'params': False, 'noise': True},
            in_axes=(0, nn.broadcast, nn.broadcast), out_axes=0,
            length=num_steps)
        body = step_fn(
            step_config=dict(
                spec=self.spec, hidden_dim=self.hidden_dim,
                processor_kind=self.processor_kind,
                triplet_fn=self.triplet_fn,
                nb_triplet_fts=self.nb_triplet_fts, use_ln=self.use_ln,
                encoder_init=self.encoder_init),
            train=train, teacher_forcing=self.hint_teacher_forcing,
            name='steps')
        hidden = jnp.zeros((num_graphs, num_nodes, self.hidden_dim))
        carry = (hidden, {k: v[0] for k, v in true_hints.items()},
                 self._zero_outputs(num_graphs, num_nodes))
        step_hints = {k: v[:num_steps] for k, v in true_hints.items()}
        (_, _, outputs), hint_preds = body(
            carry, (jnp.arange(num_steps), step_hints), inputs, lengths)
        return outputs, hint_preds

    def _zero_outputs(self, num_graphs: int, num_nodes: int):
        shapes = {'node': (num_graphs, num_nodes),
                  'edge': (num_graphs, num_nodes, num_nodes),
                  'graph': (num_graphs,)}
        out = {}
        for name, stage, loc, typ, width in self.spec:
            if stage != 'output':
                continue
            shape = shapes[loc]
            if typ == 'categorical':
                shape += (width,)
            elif typ in POINTER_TYPES:
                shape += (num_nodes,)
            out[name] = jnp.zeros(shape)
        return out


class _ScanBody(nn.Module):
    """The scanned step: picks the fed hints, runs `Step`, keeps outputs."""

    step_config: Mapping[str, Any]
    train: bool
    teacher_forcing: float

    @nn.compact
    def __call__(self, carry, xs, inputs, lengths):
        hidden, fed_hints, outputs = carry
        i, true_hints = xs
        types = {name: typ for name, _, _, typ, _ in self.step_config['spec']}
        if self.train and 0.0 < self.teacher_forcing:
            force = jax.random.bernoulli(self.make_rng('noise'),
                                         self.teacher_forcing,
                                         lengths.shape)
        else:
            force = jnp.zeros(lengths.shape, bool)
        force = force | (i == 0)  # Step 0 is always fed the truth.
        hints = {}
        for name, truth in true_hints.items():
            pick = force.reshape((-1,) + (1,) * (truth.ndim - 1))
            hints[name] = jnp.where(pick, truth, fed_hints[name])
        hidden, hint_preds, output_preds = Step(
            **self.step_config, name='step')(inputs, hints, hidden, self.train)
        fed = {name: soft_hint(types[name], pred)
               for name, pred in hint_preds.items()}
        keep_new = (i == 0) | (lengths > i + 1)
        outputs = {
            name: jnp.where(keep_new.reshape((-1,) + (1,) * (pred.ndim - 1)),
                            pred, outputs[name])
            for name, pred in output_preds.items()}
        return (hidden, fed, outputs), hint_preds

"""Random MNIST-1D programs in many architectures and ways of writing them.

The default LM's corpus (`evoprompting.corpus`) needs parents unlike the four
seeds: programs a researcher might bring. `random_program(rng)` draws one:

  * a family: a CNN (convolutions with optional strides, dilation,
    depthwise groups, normalisation, pooling or strided slicing, residual
    blocks), an MLP (optionally residual, normalised), a recurrent network
    (`nn.RNN` of a GRU, LSTM or simple cell, optionally bidirectional, after
    an optional convolution) or a small transformer (a convolutional or dense
    embedding, optionally a learnt position table, self-attention blocks);
  * a head: flatten, `jnp.max` / `jnp.mean` over the length axis or the last
    step, an optional hidden layer, `Dense(10)`;
  * a way of writing it: layers inline in an `@nn.compact __call__`, or a
    `setup` method, or a helper function or a submodule for the repeated
    block, or `nn.Sequential`; widths as literals or class fields; keyword or
    positional arguments; comments and a class docstring or none.

The text is four-space, single-quoted code (`evoprompting.styles.apply`
writes it in another style). Whether a program builds, and its size, is for
the caller to check (`corpus.build`). Helpers come after `class Model`, so
every program starts with the prompts' opening line.
"""

from __future__ import annotations

import ast
import dataclasses

import numpy as np

ACTIVATIONS = ('relu', 'gelu', 'tanh', 'elu', 'silu', 'leaky_relu', 'sigmoid',
               'swish', 'softplus')
WIDTHS = (4, 6, 8, 10, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112,
          128, 160, 192, 256)
INPUT_LENGTH = 40
STEMS = ('x = x[..., None]', 'x = jnp.expand_dims(x, axis=-1)',
         'x = x.reshape((x.shape[0], x.shape[1], 1))', 'x = x[:, :, None]')
FLATTENS = ('x = x.reshape((x.shape[0], -1))', 'x = x.reshape(x.shape[0], -1)',
            'x = jnp.reshape(x, (x.shape[0], -1))')
DOCSTRINGS = {
    'cnn': ('A 1-D convolutional classifier.', 'Convolutions over the signal, '
            'then a dense head.', 'Small CNN for MNIST-1D.'),
    'mlp': ('A multilayer perceptron.', 'Dense layers on the raw signal.',
            'MLP classifier.'),
    'rnn': ('A recurrent classifier over the 40 steps.',
            'Reads the signal step by step with a recurrent cell.'),
    'attention': ('A small transformer encoder.', 'Self-attention over '
                  'positions of the signal.'),
}


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


@dataclasses.dataclass
class _Writer:
    """Collects a program's parts as the family functions describe it."""

    rng: np.random.Generator
    setup: bool = False  # Layers declared in `setup`, used in `__call__`.
    keywords: bool = True
    comments: bool = False
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    setup_lines: list[str] = dataclasses.field(default_factory=list)
    body: list[str] = dataclasses.field(default_factory=list)
    helpers: list[str] = dataclasses.field(default_factory=list)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)

    def arg(self, keyword: str, value: str, positional: bool = True) -> str:
        return value if positional and not self.keywords else f'{keyword}={value}'

    def width(self, value: int, field: str) -> str:
        """`value` as a literal, or as a class field (first use defines it)."""
        if self.rng.random() < 0.3 and not self.setup:
            if field not in self.fields:
                self.fields[field] = f'{field}: int = {value}'
                return f'self.{field}'
            if self.fields[field].endswith(f'= {value}'):
                return f'self.{field}'
        return str(value)

    def layer(self, kind: str, expr: str, out: str = 'x', inp: str = 'x',
              comment: str = '') -> None:
        """`out = <layer expr>(inp)`, declared in setup if writing setup."""
        if self.setup:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            name = f'{kind}{self.counts[kind]}'
            self.setup_lines.append(f'self.{name} = {expr}')
            expr = f'self.{name}'
        self.line(f'{out} = {expr}({inp})', comment)

    def act(self, name: str, var: str = 'x') -> None:
        self.line(f'{var} = nn.{name}({var})')

    def line(self, text: str, comment: str = '') -> None:
        if comment and self.comments and self.rng.random() < 0.7:
            text = f'{text}  # {comment}'
        self.body.append(text)

    def note(self, comment: str) -> None:
        """A full-line comment, sometimes."""
        if self.comments and self.rng.random() < 0.5:
            self.body.append(f'# {comment}')

    def render(self, docstring: str) -> str:
        lines = ['class Model(nn.Module):']
        if docstring:
            lines.append(f'    """{docstring}"""')
        lines += [f'    {f}' for f in self.fields.values()]
        if self.setup:
            lines += ['', '    def setup(self):']
            lines += [f'        {s}' for s in self.setup_lines]
            lines += ['', '    def __call__(self, x):']
        else:
            if docstring or self.fields:
                lines.append('')
            lines += ['    @nn.compact', '    def __call__(self, x):']
        lines += [f'        {b}' for b in self.body + ['return x']]
        text = '\n'.join(lines) + '\n'
        for helper in self.helpers:
            text += '\n\n' + helper.rstrip('\n') + '\n'
        return text


def _conv_expr(w: _Writer, features: str, kernel: int, *, strides: int = 1,
               dilation: int = 1, groups: int = 1, padding: str = '') -> str:
    kernel_text = _pick(w.rng, (f'({kernel},)', f'[{kernel}]', f'{kernel}'))
    args = [w.arg('features', features), w.arg('kernel_size', kernel_text)]
    if strides > 1:
        args.append(f'strides=({strides},)' if w.rng.random() < 0.5
                    else f'strides={strides}')
    if dilation > 1:
        args.append(f'kernel_dilation={dilation}')
    if groups > 1:
        args.append(f'feature_group_count={groups}')
    if padding:
        args.append(f"padding='{padding}'")
    return f'nn.Conv({", ".join(args)})'


def _dense_expr(w: _Writer, features: str) -> str:
    return f'nn.Dense({w.arg("features", features)})'


def _norm(w: _Writer, features: int, var: str = 'x') -> None:
    if w.rng.random() < 0.7 or features % 4:
        w.layer('norm', 'nn.LayerNorm()', var, var)
    else:
        groups = _pick(w.rng, [g for g in (2, 4, 8) if features % g == 0])
        w.layer('norm', f'nn.GroupNorm(num_groups={groups})', var, var)


def _pool(w: _Writer, length: int) -> int:
    """Halves (or so) the length axis; returns the new length."""
    kind = _pick(w.rng, ('max', 'avg', 'slice'))
    window = 2 if length < 12 or w.rng.random() < 0.7 else 3
    if kind == 'slice':
        w.line(f'x = x[:, ::{window}]', 'downsample')
        return -(-length // window)
    w.line(f"x = nn.{kind}_pool(x, window_shape=({window},), "
           f"strides=({window},), padding='VALID')", 'downsample')
    return length // window


def _head(w: _Writer, family: str) -> None:
    """Reduces [B, L, C] (or [B, C]) to [B, 10]."""
    if family != 'mlp':
        w.note('classifier head')
        options = ['flatten', 'max', 'mean'] + (['last'] if family == 'rnn' else [])
        kind = _pick(w.rng, options)
        if kind == 'flatten':
            w.line(_pick(w.rng, FLATTENS), 'flatten')
        elif kind == 'max':
            w.line(_pick(w.rng, ('x = jnp.max(x, axis=1)', 'x = x.max(axis=1)')),
                   'max over positions')
        elif kind == 'mean':
            w.line(_pick(w.rng, ('x = jnp.mean(x, axis=1)', 'x = x.mean(axis=1)',
                                 'x = jnp.mean(x, axis=-2)')),
                   'average over positions')
        else:
            w.line('x = x[:, -1]', 'last step')
    if w.rng.random() < 0.5:
        hidden = int(_pick(w.rng, WIDTHS[4:]))
        w.layer('dense', _dense_expr(w, w.width(hidden, 'hidden')))
        w.act(_pick(w.rng, ACTIVATIONS))
    w.layer('dense', _dense_expr(w, '10'), comment='logits')


def _cnn(w: _Writer) -> None:
    length, channels = INPUT_LENGTH, 1
    w.line(_pick(w.rng, STEMS), '[batch, 40, 1]')
    act = _pick(w.rng, ACTIVATIONS)
    for i in range(int(w.rng.integers(1, 5))):
        features = int(_pick(w.rng, WIDTHS[2:17]))
        kernel = int(w.rng.integers(2, 10))
        dilation = 2 if w.rng.random() < 0.15 else 1
        strides = 2 if w.rng.random() < 0.15 and length > 8 else 1
        padding = _pick(w.rng, ('', '', 'SAME', 'VALID'))
        if padding == 'VALID' and length <= (kernel - 1) * dilation + 2:
            padding = 'SAME'
        groups = (channels if channels > 1 and features % channels == 0
                  and w.rng.random() < 0.2 else 1)
        w.note(f'block {i + 1}')
        w.layer('conv', _conv_expr(w, w.width(features, 'features' if i == 0 else
                                              f'features{i + 1}'), kernel,
                                   strides=strides, dilation=dilation,
                                   groups=groups, padding=padding))
        if padding == 'VALID':
            length -= (kernel - 1) * dilation
        length = -(-length // strides)
        channels = features
        w.act(act)
        if w.rng.random() < 0.3:
            _norm(w, features)
        if w.rng.random() < 0.3:
            w.layer('conv', _conv_expr(w, str(features), int(w.rng.integers(2, 8)),
                                       padding='SAME'), 'h', 'x', 'residual branch')
            w.act(act, 'h')
            w.line('x = x + h', 'residual connection')
        if length >= 6 and w.rng.random() < 0.5:
            length = _pool(w, length)
    _head(w, 'cnn')


def _mlp(w: _Writer) -> None:
    act = _pick(w.rng, ACTIVATIONS)
    if w.rng.random() < 0.2:
        w.layer('norm', 'nn.LayerNorm()', comment='normalise the input')
    width = int(_pick(w.rng, WIDTHS[6:]))
    for i in range(int(w.rng.integers(1, 4))):
        if i and w.rng.random() < 0.4:
            w.layer('dense', _dense_expr(w, w.width(width, 'hidden')), 'h', 'x')
            w.act(act, 'h')
            w.line('x = x + h', 'residual connection')
            continue
        width = int(_pick(w.rng, WIDTHS[6:]))
        w.layer('dense', _dense_expr(w, w.width(width, f'width{i + 1}')))
        w.act(act)
        if w.rng.random() < 0.2:
            _norm(w, width)
    w.layer('dense', _dense_expr(w, '10'), comment='logits')


def _rnn(w: _Writer) -> None:
    w.line(_pick(w.rng, STEMS), '[batch, 40, 1]')
    length = INPUT_LENGTH
    if w.rng.random() < 0.5:
        features = int(_pick(w.rng, WIDTHS[2:12]))
        kernel = int(w.rng.integers(2, 8))
        w.layer('conv', _conv_expr(w, str(features), kernel,
                                   strides=int(_pick(w.rng, (1, 2)))))
        w.act(_pick(w.rng, ACTIVATIONS))
        length = length // 2
    cell = _pick(w.rng, ('GRUCell', 'LSTMCell', 'OptimizedLSTMCell', 'SimpleCell'))
    hidden = int(_pick(w.rng, WIDTHS[2:14]))
    rnn = f'nn.RNN(nn.{cell}({w.arg("features", w.width(hidden, "hidden"))}))'
    if w.rng.random() < 0.3:
        w.layer('rnn', f'nn.Bidirectional({rnn}, {rnn})', comment='both directions')
    else:
        w.layer('rnn', rnn, comment='[batch, length, hidden]')
    _head(w, 'rnn')


def _attention(w: _Writer) -> None:
    w.line(_pick(w.rng, STEMS), '[batch, 40, 1]')
    dim = int(_pick(w.rng, (8, 16, 24, 32, 48, 64)))
    length = INPUT_LENGTH
    if w.rng.random() < 0.5:
        patch = int(_pick(w.rng, (2, 4, 5)))
        w.layer('embed', _conv_expr(w, str(dim), patch, strides=patch),
                comment='patch embedding')
        length = INPUT_LENGTH // patch
    else:
        w.layer('embed', _dense_expr(w, str(dim)), comment='embed each step')
    if w.rng.random() < 0.6 and not w.setup:
        w.line(f"pos = self.param('pos', nn.initializers.normal(0.02), "
               f"({length}, {dim}))")
        w.line('x = x + pos', 'learnt positions')
    heads = int(_pick(w.rng, [h for h in (1, 2, 4) if dim % h == 0]))
    act = _pick(w.rng, ('gelu', 'relu', 'silu'))
    for _ in range(int(w.rng.integers(1, 3))):
        w.note('attention block')
        w.layer('norm', 'nn.LayerNorm()', 'h', 'x')
        attention = _pick(w.rng, ('MultiHeadDotProductAttention', 'SelfAttention'))
        w.layer('attn', f'nn.{attention}(num_heads={heads})', 'h', 'h')
        w.line('x = x + h')
        if w.rng.random() < 0.7:
            w.layer('norm', 'nn.LayerNorm()', 'h', 'x')
            w.layer('dense', _dense_expr(w, str(2 * dim)), 'h', 'h')
            w.act(act, 'h')
            w.layer('dense', _dense_expr(w, str(dim)), 'h', 'h')
            w.line('x = x + h', 'feed-forward')
    _head(w, 'attention')


FAMILIES = {'cnn': (_cnn, 0.4), 'mlp': (_mlp, 0.25), 'rnn': (_rnn, 0.15),
            'attention': (_attention, 0.2)}


def _features_split(expr: str, name: str = 'features'
                    ) -> tuple[str, str] | None:
    """(`expr` with `name` as its features argument, that argument's text)
    for an `nn.Conv` / `nn.Dense` expression, else None."""
    call = ast.parse(expr, mode='eval').body
    replacement = ast.parse(name, mode='eval').body
    if not isinstance(call, ast.Call):
        return None
    if call.args:
        value, call.args[0] = call.args[0], replacement
    else:
        found = [k for k in call.keywords if k.arg == 'features']
        if not found:
            return None
        value, found[0].value = found[0].value, replacement
    return ast.unparse(call), ast.unparse(value)


def _as_helper(w: _Writer) -> None:
    """Moves the conv (or dense) + activation pairs of the body that differ
    only in width into a helper function or submodule (after the class) that
    takes the width, when the body has such a pair."""
    pairs = []
    for i in range(len(w.body) - 1):
        first, second = (w.body[i].split('  #')[0], w.body[i + 1].split('  #')[0])
        if (first.startswith(('x = nn.Conv(', 'x = nn.Dense('))
                and first.endswith(')(x)') and second.startswith('x = nn.')
                and second.endswith('(x)') and second.count('(') == 1):
            expr = first[len('x = '):-len('(x)')]
            if _features_split(expr):
                pairs.append((i, expr, second[len('x = nn.'):-len('(x)')]))
    if not pairs:
        return
    _, first_expr, act = pairs[0]
    template = _features_split(first_expr)[0]
    chosen = [(i, _features_split(e)[1]) for i, e, a in pairs
              if _features_split(e)[0] == template and a == act]
    kind = 'conv' if template.startswith('nn.Conv') else 'dense'
    function = w.rng.random() < 0.5
    if function:
        name = f'{kind}_block'
        w.helpers.append(f'def {name}(x, features):\n'
                         f'    x = {template}(x)\n    return nn.{act}(x)\n')
        call = lambda width: f'x = {name}(x, {width})'
    else:
        name = 'ConvBlock' if kind == 'conv' else 'DenseBlock'
        w.helpers.append(f'class {name}(nn.Module):\n    features: int\n\n'
                         f'    @nn.compact\n    def __call__(self, x):\n'
                         f'        x = {_features_split(first_expr, "self.features")[0]}(x)\n'
                         f'        return nn.{act}(x)\n')
        call = lambda width: f'x = {name}({w.arg("features", width)})(x)'
    for i, width in reversed(chosen):
        w.body[i:i + 2] = [call(width)]


def random_program(rng: np.random.Generator) -> str:
    """A random MNIST-1D `class Model` program (see the module docstring)."""
    names = sorted(FAMILIES)
    weights = np.array([FAMILIES[n][1] for n in names])
    family = names[rng.choice(len(names), p=weights / weights.sum())]
    way = _pick(rng, ('compact', 'compact', 'setup', 'helper', 'sequential'))
    if way == 'sequential' and family == 'mlp':
        return _sequential_mlp(rng)
    writer = _Writer(rng, setup=way == 'setup', keywords=rng.random() < 0.7,
                     comments=rng.random() < 0.4)
    FAMILIES[family][0](writer)
    if way == 'helper':
        _as_helper(writer)
    docstring = (_pick(rng, DOCSTRINGS[family]) if rng.random() < 0.3 else '')
    return writer.render(docstring)


def _sequential_mlp(rng: np.random.Generator) -> str:
    """An MLP as one `nn.Sequential` (in `setup` or inline)."""
    act = _pick(rng, ACTIVATIONS)
    layers = []
    for _ in range(int(rng.integers(1, 4))):
        layers += [f'nn.Dense({int(_pick(rng, WIDTHS[6:]))})', f'nn.{act}']
    layers.append('nn.Dense(10)')
    listed = ',\n            '.join(layers)
    if rng.random() < 0.5:
        return ('class Model(nn.Module):\n\n    def setup(self):\n'
                f'        self.net = nn.Sequential([\n            {listed},\n'
                '        ])\n\n    def __call__(self, x):\n'
                '        return self.net(x)\n')
    return ('class Model(nn.Module):\n\n    @nn.compact\n'
            '    def __call__(self, x):\n'
            f'        net = nn.Sequential([\n            {listed},\n        ])\n'
            '        return net(x)\n')

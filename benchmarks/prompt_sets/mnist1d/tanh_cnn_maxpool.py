"""Two tanh convolutions, each followed by max pooling (window 2), then a
flattened linear classifier. Positional constructor arguments throughout.
8,458 parameters.
"""
import flax.linen as nn


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = x.reshape(x.shape[0], 40, 1)
        h = nn.tanh(nn.Conv(24, (5,))(h))
        h = nn.max_pool(h, (2,), strides=(2,))
        h = nn.tanh(nn.Conv(48, (3,))(h))
        h = nn.max_pool(h, (2,), strides=(2,))
        h = h.reshape(h.shape[0], -1)
        return nn.Dense(10)(h)

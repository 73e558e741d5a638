"""A convolutional front end feeding a GRU: Conv(32, 5, stride 2) + ReLU
(length 20), then a unidirectional GRU of 72 units, the mean and the last
state concatenated into Dense(10). 24,394 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
    conv_features: int = 32
    gru_units: int = 72

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.conv_features, (5,), strides=(2,))(x[..., None])
        h = nn.relu(h)
        h = nn.RNN(nn.GRUCell(features=self.gru_units))(h)   # [batch, 20, 72]
        summary = jnp.concatenate([h.mean(axis=1), h[:, -1]], axis=-1)
        return nn.Dense(10)(summary)

"""Gated convolutional network: each layer is a Conv to 2 x 64 channels split
into value and gate, value * sigmoid(gate) (a GLU), with residuals; four
layers of kernel 5, then global max and mean concatenated, Dense(10).
125,322 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


def glu_conv(x, features, kernel):
    a, b = jnp.split(nn.Conv(2 * features, (kernel,))(x), 2, axis=-1)
    return a * nn.sigmoid(b)


class Model(nn.Module):
    features: int = 64
    layers: int = 4

    @nn.compact
    def __call__(self, x):
        x = glu_conv(x[..., None], self.features, 5)
        for _ in range(self.layers - 1):
            x = x + glu_conv(x, self.features, 5)
        pooled = jnp.concatenate([x.max(axis=1), x.mean(axis=1)], axis=-1)
        return nn.Dense(10)(pooled)

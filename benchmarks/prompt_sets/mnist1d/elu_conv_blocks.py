"""ELU conv blocks built by a helper function: each block is two convolutions
and a max pool. Three blocks (16, 32, 48 features), global mean, Dense(10).
17,626 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


def conv_block(x, features):
    """Conv -> ELU -> Conv -> ELU -> max pool (halves the length)."""
    x = nn.elu(nn.Conv(features, kernel_size=(3,), padding='SAME')(x))
    x = nn.elu(nn.Conv(features, kernel_size=(3,), padding='SAME')(x))
    return nn.max_pool(x, window_shape=(2,), strides=(2,))


class Model(nn.Module):
    widths: tuple = (16, 32, 48)

    @nn.compact
    def __call__(self, x):
        x = x[..., None]
        for w in self.widths:
            x = conv_block(x, w)
        x = jnp.mean(x, axis=1)
        return nn.Dense(10)(x)

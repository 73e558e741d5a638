"""A convolutional stem followed by attention: Conv(96, 5) + GELU and
Conv(96, 3, stride 2) + GELU (length 20), sinusoidal positions added, two
blocks of MultiHeadDotProductAttention (8 heads) with a GELU MLP(192) and
LayerNorm, global max, Dense(10). 178,858 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


def sinusoidal(length, dim):
    """Fixed sine/cosine position codes [length, dim]."""
    pos = jnp.arange(length)[:, None]
    freq = jnp.exp(-jnp.log(1000.0) * jnp.arange(0, dim, 2) / dim)
    return jnp.concatenate([jnp.sin(pos * freq), jnp.cos(pos * freq)], axis=-1)


class Block(nn.Module):
    dim: int
    heads: int = 8

    @nn.compact
    def __call__(self, h):
        y = nn.LayerNorm()(h)
        h = h + nn.MultiHeadDotProductAttention(num_heads=self.heads)(y, y)
        y = nn.LayerNorm()(h)
        y = nn.Dense(2 * self.dim)(y)
        return h + nn.Dense(self.dim)(nn.gelu(y))


class Model(nn.Module):
    dim: int = 96
    depth: int = 2

    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.Conv(self.dim, (5,))(x[:, :, None]))
        h = nn.gelu(nn.Conv(self.dim, (3,), strides=(2,))(h))
        h = h + sinusoidal(h.shape[1], self.dim)[None]
        for _ in range(self.depth):
            h = Block(self.dim)(h)
        return nn.Dense(10)(jnp.max(h, axis=1))

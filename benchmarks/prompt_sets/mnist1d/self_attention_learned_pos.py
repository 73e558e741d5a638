"""A tiny Transformer encoder: 40 scalar inputs embedded to 64 dims, plus a
learned positional table (`self.param`), two pre-LN blocks of
nn.SelfAttention (4 heads) and a GELU MLP (128), mean pooling, Dense(10).
70,410 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class EncoderBlock(nn.Module):
    dim: int
    heads: int = 4
    mlp_dim: int = 128

    @nn.compact
    def __call__(self, h):
        a = nn.SelfAttention(num_heads=self.heads, qkv_features=self.dim)(
            nn.LayerNorm()(h))
        h = h + a
        m = nn.Dense(self.mlp_dim)(nn.LayerNorm()(h))
        m = nn.Dense(self.dim)(nn.gelu(m))
        return h + m


class Model(nn.Module):
    dim: int = 64
    depth: int = 2

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(self.dim)(x[..., None])  # [batch, 40, dim]
        pos = self.param('pos', nn.initializers.normal(0.02), (40, self.dim))
        h = h + pos[None]
        for _ in range(self.depth):
            h = EncoderBlock(self.dim)(h)
        h = nn.LayerNorm()(h)
        return nn.Dense(10)(jnp.mean(h, axis=1))

"""A patch Transformer with a CLS token: 10 patches of 4 samples embedded to
48 dims, positions from nn.Embed, a learned CLS vector prepended; one block
of nn.MultiHeadDotProductAttention (6 heads) + MLP(96); the CLS output goes to
Dense(10). 20,266 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
    dim: int = 48
    heads: int = 6
    patch: int = 4

    @nn.compact
    def __call__(self, x):
        batch = x.shape[0]
        tokens = nn.Dense(self.dim)(x.reshape(batch, -1, self.patch))
        cls = self.param('cls', nn.initializers.zeros, (1, 1, self.dim))
        tokens = jnp.concatenate(
            [jnp.broadcast_to(cls, (batch, 1, self.dim)), tokens], axis=1)
        positions = jnp.arange(tokens.shape[1])
        tokens = tokens + nn.Embed(num_embeddings=11, features=self.dim)(positions)

        # one post-LN Transformer block
        attended = nn.MultiHeadDotProductAttention(num_heads=self.heads)(tokens, tokens)
        tokens = nn.LayerNorm()(tokens + attended)
        hidden = nn.relu(nn.Dense(96)(tokens))
        tokens = nn.LayerNorm()(tokens + nn.Dense(self.dim)(hidden))
        return nn.Dense(10)(tokens[:, 0])

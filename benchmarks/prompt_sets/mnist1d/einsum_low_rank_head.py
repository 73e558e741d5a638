"""A conv feature extractor with a hand-written low-rank read-out: Conv(20, 11)
and Conv(20, 5) with tanh, then logits = einsum over positions and channels
with a factored weight U[40, r] V[20, r] W[r, 10] (rank r = 6), plus a bias.
2,690 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
    channels: int = 20
    rank: int = 6

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Conv(features=self.channels, kernel_size=(11,))(x[..., None]))
        h = nn.tanh(nn.Conv(features=self.channels, kernel_size=(5,))(h))
        init = nn.initializers.lecun_normal()
        u = self.param('u', init, (40, self.rank))             # over positions
        v = self.param('v', init, (self.channels, self.rank))  # over channels
        w = self.param('w', init, (self.rank, 10))
        b = self.param('b', nn.initializers.zeros, (10,))
        z = jnp.einsum('blc,lr,cr->br', h, u, v)
        return jnp.einsum('br,rk->bk', z, w) + b

"""The Greydanus (2020) bidirectional GRU baseline for MNIST-1D (Listing 4).

One bidirectional GRU layer with hidden size 6 over the 40 time steps (one
feature each), its outputs flattened (40 x 12 = 480) into Dense(10). The printed
listing re-creates the GRU parameters on every call with a fixed key, so only
the last layer would train; here the GRU is an ordinary submodule whose
parameters are trained. 5,110 parameters.
"""
import flax.linen as nn


class Model(nn.Module):
    hidden: int = 6

    @nn.compact
    def __call__(self, x):
        x = x[..., None]
        x = nn.Bidirectional(nn.RNN(nn.GRUCell(features=self.hidden)),
                             nn.RNN(nn.GRUCell(features=self.hidden)))(x)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(features=10)(x)
        return x

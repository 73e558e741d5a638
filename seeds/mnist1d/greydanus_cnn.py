"""The Greydanus (2020) CNN baseline for MNIST-1D: the paper's Listing 3.

Three Conv1d layers of 25 features (kernel 5 then 3, 3; stride 2, padding 1),
ReLU after each, flatten (25 x 5 = 125), Dense(10). The printed listing forgets
to apply its conv modules to `x`; here they are applied, as in the original
PyTorch model. 5,210 parameters.
"""
import flax.linen as nn


class Model(nn.Module):
    features: int = 25

    @nn.compact
    def __call__(self, x):
        x = x[..., None]
        x = nn.Conv(features=self.features, kernel_size=(5,), strides=(2,), padding=1)(x)
        x = nn.relu(x)
        x = nn.Conv(features=self.features, kernel_size=(3,), strides=(2,), padding=1)(x)
        x = nn.relu(x)
        x = nn.Conv(features=self.features, kernel_size=(3,), strides=(2,), padding=1)(x)
        x = nn.relu(x)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(features=10)(x)
        return x

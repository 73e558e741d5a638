"""The paper's own larger residual CNN for MNIST-1D (Listing 2).

Conv(32, kernel 3) + ReLU, average pool 2/2, two residual blocks
`x + ReLU(Conv(32, kernel 3)(x))`, average pool 2/2, flatten, Dense(256) + ReLU,
Dense(10). 91,082 parameters.
"""
import flax.linen as nn


class Model(nn.Module):
    features: int = 32
    nlayer: int = 3

    @nn.compact
    def __call__(self, x):
        x = x[..., None]
        x = nn.Conv(features=self.features, kernel_size=(3,))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2,), strides=(2,), padding='VALID')
        for _ in range(self.nlayer - 1):
            xp = nn.Conv(features=self.features, kernel_size=(3,))(x)
            xp = nn.relu(xp)
            x = x + xp
        x = nn.avg_pool(x, window_shape=(2,), strides=(2,), padding='VALID')
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(features=256)(x)
        x = nn.relu(x)
        x = nn.Dense(features=10)(x)
        return x

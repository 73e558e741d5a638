r"""A plain PyTorch eager training loop of the MNIST-1D seeds, for comparison.

Not part of the project: `benchmarks/mnist1d_eval.py` runs this file in a
subprocess under an interpreter that has torch (torch is no dependency of the
project), so it imports only torch, numpy and the standard library.

  python benchmarks/torch_reference.py --data=DATA.npz --model=greydanus_cnn \
      [--eval_every=200] [--learning_rate=0.01] [--weight_decay=1e-4] \
      [--threads=2] [--seed=0]

DATA.npz holds float32 `train_x`, `val_x`, `test_x` [n, 40], int `train_y`,
`val_y`, `test_y` [n], and `order`, int [num_steps, batch_size] training-example
indices: step s trains on `train_x[order[s]]`, the same batches the JAX loop
sees. The loop mirrors `evoprompting.tasks.classifier_training`: AdamW at a
constant learning rate, cross-entropy, validation and test accuracy measured
every `eval_every` steps (inside the timed loop, as in the JAX loop), test
accuracy reported at the best validation accuracy. Prints one JSON object:
model, params, num_steps, train_s, steps_per_s, val_accuracy, test_accuracy,
best_step, final_train_loss, threads, torch version.
"""

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

MODELS = ('greydanus_cnn', 'residual_cnn', 'gru', 'mlp')


class GreydanusCNN(nn.Module):
    """seeds/mnist1d/greydanus_cnn.py: three stride-2 convs, Dense(10)."""

    def __init__(self, features=25):
        super().__init__()
        self.conv1 = nn.Conv1d(1, features, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(features, features, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(features, features, 3, stride=2, padding=1)
        self.linear = nn.Linear(features * 5, 10)

    def forward(self, x):
        x = x[:, None, :]
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.linear(x.flatten(1))


class ResidualCNN(nn.Module):
    """seeds/mnist1d/residual_cnn.py: conv, pool, 2 residual convs, pool, MLP."""

    def __init__(self, features=32, nlayer=3):
        super().__init__()
        self.conv = nn.Conv1d(1, features, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Conv1d(features, features, 3, padding=1)
            for _ in range(nlayer - 1))
        self.pool = nn.AvgPool1d(2, 2)
        self.hidden = nn.Linear(features * 10, 256)
        self.linear = nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x[:, None, :])))
        for block in self.blocks:
            x = x + torch.relu(block(x))
        x = self.pool(x).flatten(1)
        return self.linear(torch.relu(self.hidden(x)))


class GRU(nn.Module):
    """seeds/mnist1d/gru.py: bidirectional GRU (hidden 6), flatten, Dense(10).

    torch's GRU has two biases per gate (input and hidden), flax's GRUCell one
    per gate plus one inside the candidate, so torch has 24 more parameters.
    """

    def __init__(self, hidden=6):
        super().__init__()
        self.gru = nn.GRU(1, hidden, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(40 * 2 * hidden, 10)

    def forward(self, x):
        out, _ = self.gru(x[:, :, None])
        return self.linear(out.flatten(1))


class MLP(nn.Module):
    """seeds/mnist1d/mlp.py: Dense(100), a residual Dense(100), Dense(10)."""

    def __init__(self, hidden=100):
        super().__init__()
        self.inp = nn.Linear(40, hidden)
        self.res = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 10)

    def forward(self, x):
        x = torch.relu(self.inp(x))
        x = x + torch.relu(self.res(x))
        return self.out(x)


def make_model(name):
    return {'greydanus_cnn': GreydanusCNN, 'residual_cnn': ResidualCNN,
            'gru': GRU, 'mlp': MLP}[name]()


def train(name, data, *, eval_every, learning_rate, weight_decay, seed):
    """Trains model `name` on the batches `data['order']`; returns a dict."""
    torch.manual_seed(seed)
    model = make_model(name)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate,
                            weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    tensor = lambda k, dtype: torch.as_tensor(np.asarray(data[k]), dtype=dtype)
    train_x, train_y = tensor('train_x', torch.float32), tensor('train_y', torch.long)
    val_x, val_y = tensor('val_x', torch.float32), tensor('val_y', torch.long)
    test_x, test_y = tensor('test_x', torch.float32), tensor('test_y', torch.long)
    order = torch.as_tensor(np.asarray(data['order']), dtype=torch.long)
    num_steps = order.shape[0]

    def accuracy(x, y):
        with torch.no_grad():
            return (model(x).argmax(-1) == y).float().mean().item()

    best = (-1.0, 0.0, 0)
    losses = []
    t0 = time.perf_counter()
    for step in range(num_steps):
        rows = order[step]
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(train_x[rows]), train_y[rows])
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if (step + 1) % eval_every == 0:
            model.eval()
            val_acc, test_acc = accuracy(val_x, val_y), accuracy(test_x, test_y)
            if val_acc > best[0]:
                best = (val_acc, test_acc, step + 1)
    train_s = time.perf_counter() - t0
    return {'model': name, 'params': params, 'num_steps': num_steps,
            'train_s': train_s, 'steps_per_s': num_steps / train_s,
            'val_accuracy': best[0], 'test_accuracy': best[1],
            'best_step': best[2], 'final_train_loss': float(losses[-1]),
            'threads': torch.get_num_threads(), 'torch': torch.__version__}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', required=True,
                        help='.npz with the splits and the batch order')
    parser.add_argument('--model', required=True, choices=MODELS)
    parser.add_argument('--eval_every', type=int, default=200)
    parser.add_argument('--learning_rate', type=float, default=0.01)
    parser.add_argument('--weight_decay', type=float, default=1e-4)
    parser.add_argument('--threads', type=int, default=2,
                        help='torch.set_num_threads (intra-op threads)')
    parser.add_argument('--seed', type=int, default=0, help='torch.manual_seed')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with np.load(args.data) as f:
        data = {k: f[k] for k in f.files}
    result = train(args.model, data, eval_every=args.eval_every,
                   learning_rate=args.learning_rate,
                   weight_decay=args.weight_decay, seed=args.seed)
    print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == '__main__':
    main()

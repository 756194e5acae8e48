"""A small torch MLP on synthetic regression data: a real, fast objective for optimizer benchmarks.

    python -m orchestrator.run recipes.mlp.train --args run=m1 --overrides trainer.lr=0.01 model.activation=tanh
    python -m orchestrator.run recipes.mlp.evaluate --args policy_uri=file://./train_dir/m1/checkpoints

The data are made from ``data.seed`` (the same inputs for every trial of a sweep): ``data.features`` inputs,
a target that mixes sines, products and a threshold of random projections, plus noise. ``train`` runs SGD with
momentum and weight decay for ``trainer.epochs`` passes over the training set and saves the weights;
``evaluate`` loads them and reports the mean squared error on the held-out set as ``score`` (minimise it).
One CPU thread; a job takes a few seconds, most of it importing torch.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field

from recipes.common import (
    ProgressPrinter,
    RunName,
    Section,
    checkpoint_dir,
    checkpoint_name,
    latest_checkpoint,
    policy_path,
    read_meta,
    write_meta,
)

CHECKPOINT_SUFFIX = ".pt"
Activation = Literal["relu", "gelu", "tanh", "sigmoid"]


class DataConfig(Section):
    seed: int = Field(0, description="makes the inputs, the target function and the noise")
    features: int = Field(8, ge=1)
    train_size: int = Field(1024, ge=16)
    val_size: int = Field(1024, ge=16)
    noise: float = Field(0.1, ge=0, description="standard deviation of the target noise")


class ModelConfig(Section):
    width: int = Field(64, ge=1, description="units per hidden layer")
    layers: int = Field(2, ge=1, le=8, description="hidden layers")
    activation: Activation = "relu"


class TrainerConfig(Section):
    lr: float = Field(1e-2, gt=0, description="SGD step size")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(20, ge=1)
    seed: int = Field(0, description="initial weights and batch order")


class MLPConfig(Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    trainer: TrainerConfig = TrainerConfig()


def make_data(d: DataConfig) -> tuple[Any, Any, Any, Any]:
    """(x_train, y_train, x_val, y_val) as float32 tensors; the same for the same DataConfig."""
    import torch

    g = torch.Generator().manual_seed(d.seed)
    n = d.train_size + d.val_size
    x = torch.randn(n, d.features, generator=g)
    proj = torch.randn(d.features, 4, generator=g) / d.features**0.5
    z = x @ proj
    y = torch.sin(2 * z[:, 0]) + z[:, 1] * z[:, 2] + (z[:, 3] > 0.3).float() - 0.5 * z[:, 0] ** 2
    y = (y - y.mean()) / y.std() + d.noise * torch.randn(n, generator=g)
    return x[: d.train_size], y[: d.train_size, None], x[d.train_size :], y[d.train_size :, None]


def make_model(config: MLPConfig) -> Any:
    from torch import nn

    act = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[config.model.activation]
    layers: list[Any] = []
    width_in = config.data.features
    for _ in range(config.model.layers):
        layers += [nn.Linear(width_in, config.model.width), act()]
        width_in = config.model.width
    layers.append(nn.Linear(width_in, 1))
    return nn.Sequential(*layers)


def _val_loss(model: Any, x: Any, y: Any) -> float:
    import torch

    with torch.no_grad():
        loss = float(torch.mean((model(x) - y) ** 2))
    return loss if loss == loss and loss < 1e6 else 1e6  # a diverged run scores badly, not NaN


def train(run: RunName, config: MLPConfig = MLPConfig(), train_dir: str = "train_dir") -> dict[str, Any]:
    """Train the MLP and save its weights under <train_dir>/<run>/checkpoints; report the seconds of training."""
    import torch

    torch.set_num_threads(1)
    t = config.trainer
    x, y, xv, yv = make_data(config.data)
    torch.manual_seed(t.seed)
    model = make_model(config)
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    g = torch.Generator().manual_seed(t.seed)
    steps_per_epoch = (len(x) + t.batch_size - 1) // t.batch_size
    progress = ProgressPrinter(total=t.epochs * steps_per_epoch, interval=1.0)
    start = time.monotonic()
    for epoch in range(1, t.epochs + 1):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), t.batch_size):
            idx = order[i : i + t.batch_size]
            loss = torch.mean((model(x[idx]) - y[idx]) ** 2)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # keeps a high rate from producing NaN
            opt.step()
        progress.update(epoch, epoch * steps_per_epoch)
    seconds = time.monotonic() - start
    ckpt_dir = checkpoint_dir(train_dir, run)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / checkpoint_name(t.epochs, CHECKPOINT_SUFFIX)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # atomic: an eval never loads half a checkpoint
    write_meta(
        ckpt_dir,
        {
            "run": run,
            "recipe": "recipes.mlp",
            "latest": path.name,
            "train_seconds": round(seconds, 3),
            "config": config.model_dump(mode="json"),
        },
    )
    return {
        "cost": round(seconds, 3),
        "metrics": {"train/loss": round(loss.item(), 5), "train/seconds": round(seconds, 3)},
    }


def evaluate(policy_uri: str, run: RunName | None = None) -> dict[str, Any]:
    """Load the newest weights at policy_uri (with the config recorded next to them); report the validation MSE."""
    import torch

    torch.set_num_threads(1)
    ckpt = latest_checkpoint(policy_path(policy_uri), CHECKPOINT_SUFFIX)
    meta = read_meta(ckpt)
    config = MLPConfig.model_validate(meta.get("config", {}))
    model = make_model(config)
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    _, _, xv, yv = make_data(config.data)
    loss = _val_loss(model, xv, yv)
    return {"score": loss, "cost": meta.get("train_seconds"), "metrics": {"eval/val_mse": loss}}

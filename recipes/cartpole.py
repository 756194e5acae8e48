"""The demo recipe: PPO (stable-baselines3) on CartPole-v1, on one CPU thread.

    python -m orchestrator.run recipes.cartpole.train --args run=demo_trial_0001 \\
        --overrides trainer.optimizer.learning_rate=0.001 trainer.total_timesteps=20000
    python -m orchestrator.run recipes.cartpole.evaluate \\
        --args policy_uri=file://./train_dir/demo_trial_0001/checkpoints

The config answers to the seed's paths (``trainer.optimizer.learning_rate``,
``trainer.losses.loss_configs.ppo.{clip_coef, ent_coef, gae_lambda, vf_coef, gamma}``,
``trainer.total_timesteps``); ``--help`` lists every path. The defaults take a train job about 30-45 s and an
eval job a few seconds on one core, and the score (mean return over deterministic episodes, at most 500)
responds clearly to the learning rate.

``train`` prints progress lines, saves ``train_dir/<run>/checkpoints/model_<step>.zip`` every
``trainer.checkpoint_interval`` steps and at the end, and reports ``{"cost": <seconds of training>, ...}``.
``evaluate`` loads the newest checkpoint and reports ``{"score": <mean return>, "metrics": {...}}``.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field, model_validator

from recipes.common import (
    ProgressPrinter,
    RunName,
    Section,
    checkpoint_dir,
    checkpoint_name,
    latest_checkpoint,
    policy_path,
    read_meta,
    report_intermediate,
    write_meta,
)

CHECKPOINT_SUFFIX = ".zip"


# The seed's paths: trainer.optimizer.learning_rate, trainer.losses.loss_configs.ppo.*, trainer.total_timesteps.
# Defaults follow rl-baselines3-zoo's tuned PPO for CartPole-v1 (constant rates), on a budget of ~30-45 s per job.


class OptimizerConfig(Section):
    learning_rate: float = Field(1e-3, gt=0, description="Adam step size")
    max_grad_norm: float = Field(0.5, gt=0, description="gradient clipping norm")


class PPOConfig(Section):
    clip_coef: float = Field(0.2, gt=0, description="PPO policy ratio clip range")
    ent_coef: float = Field(0.0, ge=0, description="entropy bonus weight")
    gae_lambda: float = Field(0.8, ge=0, le=1, description="GAE lambda")
    vf_coef: float = Field(0.5, ge=0, description="value loss weight")
    gamma: float = Field(0.98, gt=0, le=1, description="discount factor")


class LossConfigs(Section):
    ppo: PPOConfig = PPOConfig()


class LossesConfig(Section):
    loss_configs: LossConfigs = LossConfigs()


class TrainerConfig(Section):
    total_timesteps: int = Field(120_000, gt=0, description="environment steps to train for")
    optimizer: OptimizerConfig = OptimizerConfig()
    losses: LossesConfig = LossesConfig()
    num_envs: int = Field(8, ge=1, description="parallel environments (in this one process)")
    batch_size: int | None = Field(
        None,
        ge=2,
        description="samples collected per update, as Metta's trainer.batch_size (num_envs x n_steps); "
        "sets n_steps to batch_size / num_envs (default num_envs x n_steps = 256)",
    )
    n_steps: int = Field(32, ge=1, description="rollout length per environment per update")
    minibatch_size: int = Field(256, ge=2, description="samples per gradient step (at most the batch)")
    update_epochs: int = Field(20, ge=1, description="passes over each rollout")
    seed: int = Field(0, description="seeds the environments, the network and the sampling")
    checkpoint_interval: int = Field(50_000, gt=0, description="steps between checkpoints (one at the end too)")
    progress_interval: float = Field(2.0, ge=0, description="seconds between progress lines")

    @model_validator(mode="after")
    def _batch(self) -> TrainerConfig:
        if self.batch_size is None:
            return self
        if self.batch_size % self.num_envs:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of num_envs {self.num_envs}")
        steps = self.batch_size // self.num_envs
        if "n_steps" in self.model_fields_set and self.n_steps != steps:
            raise ValueError(
                f"batch_size {self.batch_size} and n_steps {self.n_steps} disagree (num_envs {self.num_envs})"
            )
        object.__setattr__(self, "n_steps", steps)  # frozen: set once, while validating
        return self

    @property
    def rollout(self) -> int:
        return self.num_envs * self.n_steps


class PolicyConfig(Section):
    hidden_size: int = Field(64, ge=1, description="units per hidden layer (policy and value nets)")
    num_layers: int = Field(2, ge=1, le=8, description="hidden layers")


class EvaluatorConfig(Section):
    episodes: int = Field(20, ge=1, description="deterministic evaluation episodes")
    deterministic: bool = Field(True, description="act greedily")
    seed: int = Field(1000, description="environment seed of the first episode")


class CartPoleConfig(Section):
    env_id: str = Field("CartPole-v1", description="any gymnasium env id with discrete or box actions")
    trainer: TrainerConfig = TrainerConfig()
    policy: PolicyConfig = PolicyConfig()
    evaluator: EvaluatorConfig = EvaluatorConfig()


def _torch_one_thread() -> None:
    """Jobs run side by side, one per core: keep torch (and its BLAS) to one thread each."""
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def train(run: RunName, config: CartPoleConfig = CartPoleConfig(), train_dir: str = "train_dir") -> dict[str, Any]:
    """Train PPO and save checkpoints under <train_dir>/<run>/checkpoints; report the seconds of training."""
    _torch_one_thread()
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    t = config.trainer
    ppo = t.losses.loss_configs.ppo
    ckpt_dir = checkpoint_dir(train_dir, run)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()

    def save(model: Any, step: int) -> None:
        path = ckpt_dir / checkpoint_name(step, CHECKPOINT_SUFFIX)
        tmp = path.with_name(f".{path.stem}.tmp{CHECKPOINT_SUFFIX}")  # SB3 insists on the .zip suffix
        model.save(tmp)
        tmp.replace(path)  # atomic: an eval never loads half a checkpoint
        write_meta(
            ckpt_dir,
            {
                "run": run,
                "recipe": "recipes.cartpole",
                "latest": path.name,
                "step": step,
                "total_timesteps": t.total_timesteps,
                "train_seconds": round(time.monotonic() - start, 3),
                "config": config.model_dump(mode="json"),
            },
        )

    class Reporter(BaseCallback):
        """Progress lines after each rollout, checkpoints every checkpoint_interval steps, and the mean return of
        the recent training episodes as an intermediate result (SWEEP_REPORT, for early stopping)."""

        def __init__(self) -> None:
            super().__init__()
            self.progress = ProgressPrinter(total=t.total_timesteps, interval=t.progress_interval)
            self.epoch = 0
            self.last_checkpoint = 0

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            self.epoch += 1
            step = self.num_timesteps
            self.progress.update(self.epoch, step)
            episodes = self.model.ep_info_buffer
            if episodes:  # SB3's window of the last 100 finished episodes
                mean_return = sum(e["r"] for e in episodes) / len(episodes)
                report_intermediate(step, mean_return, **{"train/mean_episode_return": mean_return})
            if step - self.last_checkpoint >= t.checkpoint_interval and step < t.total_timesteps:
                save(self.model, step)
                self.last_checkpoint = step

    env = make_vec_env(config.env_id, n_envs=t.num_envs, seed=t.seed)
    model = PPO(
        "MlpPolicy",
        env,
        learning_rate=t.optimizer.learning_rate,
        n_steps=t.n_steps,
        batch_size=min(t.minibatch_size, t.rollout),
        n_epochs=t.update_epochs,
        gamma=ppo.gamma,
        gae_lambda=ppo.gae_lambda,
        clip_range=ppo.clip_coef,
        ent_coef=ppo.ent_coef,
        vf_coef=ppo.vf_coef,
        max_grad_norm=t.optimizer.max_grad_norm,
        policy_kwargs={"net_arch": [config.policy.hidden_size] * config.policy.num_layers},
        seed=t.seed,
        device="cpu",
        verbose=0,
    )
    reporter = Reporter()
    model.learn(total_timesteps=t.total_timesteps, callback=reporter)
    steps = int(model.num_timesteps)
    reporter.progress.update(reporter.epoch, steps, force=True)
    save(model, steps)
    env.close()
    seconds = time.monotonic() - start
    episodes = [info["r"] for info in model.ep_info_buffer or ()]
    metrics: dict[str, Any] = {
        "train/timesteps": steps,
        "train/seconds": round(seconds, 3),
        "train/sps": round(steps / seconds, 1),
    }
    if episodes:
        metrics["train/episode_return"] = round(sum(episodes) / len(episodes), 3)
    return {"cost": round(seconds, 3), "metrics": metrics}


def evaluate(policy_uri: str, run: RunName | None = None, config: CartPoleConfig = CartPoleConfig()) -> dict[str, Any]:
    """Load the newest checkpoint at policy_uri, play evaluator.episodes episodes, report the mean return."""
    ckpt = latest_checkpoint(policy_path(policy_uri), CHECKPOINT_SUFFIX)  # before the slow imports
    meta = read_meta(ckpt)
    _torch_one_thread()
    import numpy as np
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    ev = config.evaluator
    env_id = meta.get("config", {}).get("env_id", config.env_id)
    start = time.monotonic()
    model = PPO.load(ckpt, device="cpu")
    env = make_vec_env(env_id, n_envs=min(ev.episodes, 10), seed=ev.seed)
    returns, lengths = evaluate_policy(
        model, env, n_eval_episodes=ev.episodes, deterministic=ev.deterministic, return_episode_rewards=True
    )
    env.close()
    returns_arr, lengths_arr = np.asarray(returns, dtype=float), np.asarray(lengths, dtype=float)
    score = float(returns_arr.mean())
    metrics = {
        "eval/mean_return": round(score, 3),
        "eval/std_return": round(float(returns_arr.std()), 3),
        "eval/min_return": float(returns_arr.min()),
        "eval/max_return": float(returns_arr.max()),
        "eval/mean_length": round(float(lengths_arr.mean()), 2),
        "eval/episodes": ev.episodes,
        "eval/checkpoint": ckpt.name,
        "eval/seconds": round(time.monotonic() - start, 3),
    }
    result: dict[str, Any] = {"score": score, "metrics": metrics}
    if isinstance(meta.get("train_seconds"), (int, float)) and meta.get("latest") == ckpt.name:
        result["cost"] = meta["train_seconds"]  # seconds of training, for runs whose train result is not seen
    if run is not None:
        metrics["eval/run"] = run
    return result

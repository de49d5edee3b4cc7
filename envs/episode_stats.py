"""Episode statistics of a batch of environments, kept on the environments' device.

Every update is a handful of tensor ops with no host synchronisation, so an on-device training loop
can track the returns and lengths of finished episodes at every step and read a summary only when it
logs (one host copy per read).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from envs.validation import positive_int

__all__ = ["EpisodeSummary", "EpisodeTracker"]


class EpisodeSummary(NamedTuple):
    """What :meth:`EpisodeTracker.summary` reports (host Python numbers).

    Attributes:
        episodes: number of episodes finished since the tracker was created or cleared.
        mean_return: mean undiscounted return of the last ``min(episodes, window)`` finished episodes
            (``nan`` when none has finished), like SB3's ``rollout/ep_rew_mean``.
        mean_length: mean length of the same episodes (``nan`` when none has finished).
    """

    episodes: int
    mean_return: float
    mean_length: float


class EpisodeTracker:
    """Running returns and lengths of ``num_envs`` episodes, and a window of the last finished ones.

    The window is a ring buffer of ``window`` slots filled with a scatter (finished episodes are
    ranked by a cumulative sum of the done mask, unfinished rows write into a spare slot), so no
    boolean indexing and no host copy is needed. If more than ``window`` episodes finish in the same
    step, the window keeps ``window`` of them (which ones is unspecified).

    Args:
        num_envs: number of parallel episodes (>= 1).
        window: number of finished episodes the summary averages over (>= 1; SB3 uses 100).
        device: where the tensors live.
        dtype: floating dtype of the returns.
    """

    def __init__(self, num_envs: int, window: int, device: torch.device, dtype: torch.dtype) -> None:
        self.num_envs = positive_int("num_envs", num_envs, "parallel environments")
        self.window = positive_int("window", window, "finished episodes averaged by the summary")
        self.running_returns = torch.zeros(self.num_envs, device=device, dtype=dtype)
        self.running_lengths = torch.zeros(self.num_envs, device=device, dtype=torch.long)
        # One spare slot at index `window` absorbs the writes of rows whose episode did not finish.
        self.window_returns = torch.zeros(self.window + 1, device=device, dtype=dtype)
        self.window_lengths = torch.zeros(self.window + 1, device=device, dtype=torch.long)
        self.finished = torch.zeros((), device=device, dtype=torch.long)

    def update(self, rewards: torch.Tensor, done: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add one step's rewards; move the episodes that ended into the window and restart them.

        Args:
            rewards: (num_envs,) rewards of this step.
            done: (num_envs,) bool, True where the episode ended at this step (terminated or truncated).

        Returns:
            ``(returns, lengths)``: each row's episode return and length including this step, taken
            before the finished rows are restarted (the finished episodes' totals where ``done``).
        """
        returns = self.running_returns + rewards
        lengths = self.running_lengths + 1
        done_long = done.long()
        rank = torch.cumsum(done_long, dim=0) - 1
        slot = torch.where(done, (self.finished + rank) % self.window, self.window)
        self.window_returns.scatter_(0, slot, returns)
        self.window_lengths.scatter_(0, slot, lengths)
        self.finished += done_long.sum()
        self.running_returns = returns.masked_fill(done, 0.0)
        self.running_lengths = lengths.masked_fill(done, 0)
        return returns, lengths

    def restart_running(self) -> None:
        """Forget the unfinished episodes (after an explicit reset of every environment)."""
        self.running_returns.zero_()
        self.running_lengths.zero_()

    def clear(self) -> None:
        """Forget everything: running episodes, the window and the finished count."""
        self.restart_running()
        self.window_returns.zero_()
        self.window_lengths.zero_()
        self.finished.zero_()

    def latest(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns and lengths of the last ``min(count, finished, window)`` finished episodes, oldest first.

        Episode number ``m`` (counting from 0) sits in slot ``m % window``. Reads ``finished`` once
        (one host copy); the returned tensors stay on the device.

        Args:
            count: how many of the most recent finished episodes to return (>= 0).
        """
        if count < 0:
            raise ValueError(f"count must be >= 0 (number of recent episodes), got {count}")
        finished = int(self.finished)
        available = min(count, finished, self.window)
        slots = torch.arange(finished - available, finished, device=self.finished.device) % self.window
        return self.window_returns[slots], self.window_lengths[slots]

    def summary(self) -> EpisodeSummary:
        """Number of finished episodes and mean return / length over the window (one host copy)."""
        filled = torch.clamp(self.finished, max=self.window)
        valid = torch.arange(self.window + 1, device=self.finished.device) < filled
        count = torch.clamp(filled, min=1).to(self.window_returns.dtype)
        mean_return = (self.window_returns * valid).sum() / count
        mean_length = (self.window_lengths * valid).sum().to(self.window_returns.dtype) / count
        episodes, mean_return_value, mean_length_value = torch.stack(
            [self.finished.to(self.window_returns.dtype), mean_return, mean_length]
        ).tolist()
        if episodes == 0:
            return EpisodeSummary(0, float("nan"), float("nan"))
        return EpisodeSummary(int(episodes), mean_return_value, mean_length_value)

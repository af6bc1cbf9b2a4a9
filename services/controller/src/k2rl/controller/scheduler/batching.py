"""Drawing prompt groups for an iteration and splitting trained groups into steps."""

from __future__ import annotations

import random

from k2rl.controller.environments import EnvironmentSetup, Task
from k2rl.controller.run_store import Cursor
from k2rl.controller.trajectories import PromptGroup, Sample, SampleStatus
from k2rl.controller.v1 import controller_pb2
from k2rl.models.tokenizer import Tokenizer


def draw_groups(config: controller_pb2.RunConfig, environments: dict[str, EnvironmentSetup], cursor: Cursor,
                count: int, iteration: int, tokenizer: Tokenizer, context_length: int) -> list[PromptGroup]:
    """``count`` new groups, environments chosen by weight; advances ``cursor`` in place.

    The environment of group number n depends only on (seed, n) and its task only on the
    environment's cursor, so a restarted run draws exactly the groups it would have.
    """
    specs = list(config.environments)
    weights = [spec.weight if spec.weight > 0 else 1.0 for spec in specs]
    groups = []
    for _ in range(count):
        number = cursor.next_group
        spec = random.Random(f"{config.seed}/group/{number}").choices(specs, weights)[0]
        index = cursor.next_task.get(spec.name, 0)
        task: Task = environments[spec.name].tasks.task(index)
        prompt = environments[spec.name].new_episode().reset(task)
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=True)
        k = spec.samples_per_prompt or config.samples_per_prompt or 1
        budget = spec.token_budget or max(context_length - len(prompt_ids), 1)
        groups.append(PromptGroup(f"g{number:09d}", spec.name, task.to_json(), prompt_ids,
                                  [Sample(i, budget) for i in range(k)], iteration))
        cursor.next_task[spec.name] = index + 1
        cursor.next_group = number + 1
    return groups


def enforce_staleness(groups: list[PromptGroup], partial: controller_pb2.PartialRolloutConfig,
                      current_version: int) -> int:
    """Restart paused samples over ``max_resumes`` or ``max_version_lag``; returns how many.

    The sample starts over rather than leaving the group, so groups stay whole (K1.5's
    baseline is over all K samples).
    """
    dropped = 0
    for group in groups:
        for sample in group.samples:
            if sample.status is not SampleStatus.PAUSED:
                continue
            oldest = sample.oldest_version
            too_many = bool(partial.max_resumes) and sample.resume_count > partial.max_resumes
            too_old = bool(partial.max_version_lag) and oldest is not None \
                and current_version - oldest > partial.max_version_lag
            if too_many or too_old:
                group.samples[sample.sample_index] = Sample(sample.sample_index, sample.token_budget)
                dropped += 1
    return dropped


def split_stale(groups: list[PromptGroup], max_version_lag: int,
                current_version: int) -> tuple[list[PromptGroup], list[PromptGroup]]:
    """(fresh, stale) complete groups: a group is stale when one of its samples has tokens
    sampled more than ``max_version_lag`` versions before ``current_version`` (0 = no
    bound). The stale samples of a stale group start over, in place; the group is trained
    once all K are fresh and finished again (bounded off-policyness, K2 section 3.3.4)."""
    if not max_version_lag:
        return groups, []
    fresh, stale = [], []
    for group in groups:
        old = [s for s in group.samples
               if s.oldest_version is not None and current_version - s.oldest_version > max_version_lag]
        for sample in old:
            group.samples[sample.sample_index] = Sample(sample.sample_index, sample.token_budget)
        (stale if old else fresh).append(group)
    return fresh, stale


def split_steps(groups: list[PromptGroup], steps: int) -> list[list[PromptGroup]]:
    """Whole groups into at most ``steps`` non-empty batches of near-equal size."""
    steps = max(1, min(steps, len(groups)))
    return [groups[i::steps] for i in range(steps)] if groups else []

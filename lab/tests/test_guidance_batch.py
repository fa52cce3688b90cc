"""The shipped samplers tell blockdance how many copies of each sample a call stacks, so a
per-sample policy (blockdance-ada) runs on them through the bench and the demo."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

import blockdance
from blockdance import Decision, ModelCall, Policy, PolicyConfig, StepContext
from blockdance_lab.workload import GenerateRequest
from blockdance_lab.zoo.dit.workloads import random_dit_s2
from blockdance_lab.zoo.sd3.workloads import SD3Sampler
from blockdance_lab.zoo.stdit.workloads import STDiTSampler


class SeeSamplesConfig(PolicyConfig):
    kind: Literal["see-samples"] = "see-samples"


class SeeSamples(Policy[SeeSamplesConfig]):
    config_class: ClassVar[type[PolicyConfig]] = SeeSamplesConfig
    sees_calls = True

    def __init__(self, config: SeeSamplesConfig) -> None:
        super().__init__(config)
        self.seen: list[tuple[int, int]] = []

    def begin_call(self, ctx: StepContext, call: ModelCall) -> None:
        self.seen.append((call.batch_size, call.samples))

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        return Decision.COMPUTE


def run(guidance_scale: float) -> list[tuple[int, int]]:
    sampler = random_dit_s2()
    sampler.guidance_scale = guidance_scale
    policy = SeeSamples(SeeSamplesConfig())
    with blockdance.attach(sampler, policy), torch.no_grad():
        sampler(GenerateRequest(seeds=(0, 1, 2), num_steps=3))
    return policy.seen


def test_the_dit_sampler_says_whether_guidance_stacks_the_batch() -> None:
    assert run(4.0) == [(6, 3)] * 3  # 3 samples, conditional and null halves in one call
    assert run(1.0) == [(3, 3)] * 3  # no guidance: one row per sample


def test_the_sd3_and_stdit_samplers_always_stack_two_halves() -> None:
    for sampler in (SD3Sampler, STDiTSampler):
        prop: Any = sampler.do_classifier_free_guidance
        assert isinstance(prop, property) and prop.fget(object()) is True

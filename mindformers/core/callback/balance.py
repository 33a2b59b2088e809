"""TopkBiasBalanceCallback: DeepSeek's auxiliary-loss-free expert balancing, one bias update per training step."""
import logging

import numpy as np
from mindspore import Tensor
from mindspore.train import Callback

from ...modules.moe import EXPERT_LOAD
from ...tools.register import MindFormerModuleType, MindFormerRegister

logger = logging.getLogger("mindformers")


@MindFormerRegister.register(MindFormerModuleType.CALLBACK)
class TopkBiasBalanceCallback(Callback):
    """After each step, every router that counts its expert loads (model_config expert_bias_update_rate > 0,
    upstream's moe_router_bias_update_rate) moves its e_score_correction_bias by the rate towards balance:
    bias += rate * sign(expected - load), where load is each expert's share of the step's routed tokens summed
    over its gradient-accumulation micro-batches and expected is micro-batches / experts; then the load restarts
    at 0. The trainer adds this callback itself when the model has such routers.

    The arguments are upstream's legacy ones: each must agree with the model and the run (the rate is the model's).
    """

    def __init__(self, balance_via_topk_bias: bool = True, topk_bias_update_rate: float = 0.0, expert_num: int = 1,
                 micro_batch_num: int = 1, gradient_accumulation_steps: int = 1):
        super().__init__()
        if not balance_via_topk_bias:
            raise ValueError("TopkBiasBalanceCallback.balance_via_topk_bias: False turns the callback off; remove "
                             "the callback instead")
        if micro_batch_num != 1:
            raise ValueError(f"TopkBiasBalanceCallback.micro_batch_num: {micro_batch_num} is not supported: pipeline "
                             f"micro-batches are not implemented (set 1)")
        self.rate, self.expert_num, self.accum = float(topk_bias_update_rate), int(expert_num), \
            int(gradient_accumulation_steps)
        self.routers = []

    def on_train_begin(self, run_context):
        cb = run_context.original_args()
        self.routers = [cell for _, cell in cb.network.cells_and_names() if hasattr(cell, EXPERT_LOAD)]
        if not self.routers:
            raise ValueError("TopkBiasBalanceCallback: the model has no router that counts expert loads; set "
                             "model_config.expert_bias_update_rate (upstream: moe_router_bias_update_rate) > 0 on "
                             "a DeepSeek-V3 model")
        run_accum = int(cb.get("gradient_accumulation_steps", 1))
        for name, given, unset, actual in (
                ("topk_bias_update_rate", self.rate, 0.0, self.routers[0].bias_update_rate),
                ("expert_num", self.expert_num, 1, self.routers[0].num_experts),
                ("gradient_accumulation_steps", self.accum, 1, run_accum)):
            if given not in (unset, actual):
                raise ValueError(f"TopkBiasBalanceCallback.{name}: {given} but the run has {actual}; remove the "
                                 f"argument (it is read from the model and the run)")
        self.accum = run_accum

    def on_train_step_end(self, run_context):
        for router in self.routers:
            load = router.expert_load.asnumpy()
            if load.sum() <= 0:
                continue
            expected = self.accum / router.num_experts
            bias = router.e_score_correction_bias.asnumpy()
            step = np.sign(expected - load).astype(np.float32) * np.float32(router.bias_update_rate)
            router.e_score_correction_bias.set_data(Tensor(bias + step))
            router.expert_load.set_data(Tensor(np.zeros_like(load)))

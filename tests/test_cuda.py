"""GPU readiness (``pytest -m cuda``): the CUDA paths that CPU runs never take.

* the encoder on CUDA gives the CPU's hidden states (fp32, TF32 off) within 1e-4;
* a training run with bf16 autocast and the fused torch AdamW on CUDA finishes with
  finite losses and really used both;
* a 2-GPU job through ``core.jobs.manager`` (torchrun, NCCL) is accepted, trains, keeps both
  ranks' weights identical, and its checkpoint loads.

Every test skips without CUDA (the 2-GPU one without two GPUs). ``python -m
core.gpu_check`` runs this file and ``core.tools.bench`` on a GPU machine.
"""
from __future__ import annotations

import json

import pytest
import torch

from conftest import REPO, TINY

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")]
QUICK = REPO / "configs" / "quick.yaml"


def test_encoder_on_cuda_equals_cpu():
    from core.model.bert import BertModel, load_tokenizer, packaged_model_dir
    tok = load_tokenizer(packaged_model_dir())
    texts = ["A gorgeous, witty, seductive movie.", "Short.", "The cat sat on the mat while the dog slept nearby."]
    batch = tok(texts, padding=True, return_tensors="pt")
    cpu = BertModel.from_pretrained("minilm").eval()
    gpu = BertModel.from_pretrained("minilm").eval().to("cuda")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            a = cpu(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state
            b = gpu(*(batch[k].cuda() for k in ("input_ids", "attention_mask", "token_type_ids"))).last_hidden_state
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    mask = batch["attention_mask"].bool()
    diff = (a[mask] - b.cpu()[mask]).abs().max().item()
    assert diff <= 1e-4, diff


def test_bf16_autocast_and_fused_adamw_train_on_cuda(tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    from core.config.schema import Config
    from core.training.trainer import Trainer
    cfg = Config.from_yaml(QUICK, TINY + ["train.precision=bf16", "train.optimizer=torch_adamw",
                                          "train.device=cuda", f"data.dir={REPO / 'data'}"])
    trainer = Trainer(cfg, tmp_path / "bf16", progress=False)
    seen = []
    real_autocast = torch.autocast

    def spy(device_type, *args, **kwargs):
        seen.append((device_type, kwargs.get("dtype"), kwargs.get("enabled", True)))
        return real_autocast(device_type, *args, **kwargs)
    torch.autocast = spy
    try:
        summary = trainer.run()
    finally:
        torch.autocast = real_autocast
    assert ("cuda", torch.bfloat16, True) in seen
    assert trainer.optimizer.defaults.get("fused") is True
    assert next(trainer.model.parameters()).is_cuda
    losses = [e for e in map(json.loads, (tmp_path / "bf16" / "train_log.jsonl").read_text().splitlines())
              if e["event"] == "step"]
    assert losses and all(v == v and abs(v) < 1e4 for e in losses for v in e["loss"].values())
    assert summary["mean_score"] is not None


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpu_nccl_job(tmp_path):
    from core.jobs.manager import JobManager
    from core.model.multitask import MultitaskBert
    jm = JobManager(tmp_path / "ckpts")
    job = jm.submit(QUICK, TINY, name="nccl", device="cuda", gpus=2)
    import time
    deadline = time.time() + 600
    while jm.get(job.id).state in ("queued", "running") and time.time() < deadline:
        time.sleep(1)
    done = jm.get(job.id)
    assert done.state == "succeeded", done.message + "\n" + done.log_tail()
    events = [json.loads(x) for x in done.train_log.read_text().splitlines()]
    assert events[-1]["world_size"] == 2 and events[-1]["ranks_in_sync"] is True
    assert "cuda" in events[0]["device"]
    MultitaskBert.load(done.checkpoint)

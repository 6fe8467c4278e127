"""``python -m core.tools.export RUN OUT --format hf|sentence-transformers`` (issue #26): the
directory loads offline in transformers / sentence-transformers and embeds as the run
does (cosine >= 0.9999); the minbert publication path keeps working."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, write_tiny_encoder
from core.errors import MinbertError
from core.tools.export import EXPORT_INFO, export_encoder, main
from core.model.multitask import MultitaskBert

TEXTS = ["The worst film I have seen this year.", "A gorgeous, witty, seductive movie.", "ok",
         "How do I learn Python quickly?",
         # longer than the run's max_len: both sides must cut it there
         " ".join(["the plot wanders through three decades of one family's quarrels and reunions"] * 10)]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def trained(tiny_checkpoint, tmp_path_factory):
    """A real checkpoint whose encoder is far from the pretrained one (the tiny run's
    weights plus seeded noise), so that exporting the pretrained encoder would fail."""
    model = MultitaskBert.load(tiny_checkpoint)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.bert.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    out = tmp_path_factory.mktemp("exp") / "noisy"
    model.save(out)
    ours = model.embed(TEXTS)
    pretrained = MultitaskBert.load("pretrained").embed(TEXTS)
    assert _cosines(ours, pretrained).min() < 0.99     # the check below can tell them apart
    return out, ours


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    src, _ = trained
    root = tmp_path_factory.mktemp("out")
    infos = {fmt: export_encoder(src, root / fmt, fmt) for fmt in ("hf", "sentence-transformers")}
    return root, infos


def test_hf_export_loads_in_transformers_and_embeds_as_ours(trained, exports):
    from transformers import AutoModel, AutoTokenizer
    _, ours = trained
    root, infos = exports
    out = root / "hf"
    assert {"config.json", "model.safetensors", "tokenizer.json", EXPORT_INFO} <= {p.name for p in out.iterdir()}
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = AutoModel.from_pretrained(out, local_files_only=True).eval()
    max_len = json.loads((trained[0] / "config.json").read_text())["config"]["model"]["max_len"]
    assert type(model).__name__ == "BertModel" and tokenizer.model_max_length == max_len
    batch = tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()          # mean pooling (model.pooling: mean)
    theirs = ((states * mask).sum(1) / mask.sum(1)).numpy()
    assert _cosines(ours, theirs).min() >= 0.9999
    info = json.loads((out / EXPORT_INFO).read_text())
    assert info == infos["hf"] and info["pooling"] == "mean" and info["check"]["min_cosine"] >= 0.9999


def test_both_exports_load_offline_in_a_fresh_process(trained, exports, tmp_path):
    """sentence-transformers' SentenceTransformer(OUT).encode and transformers' AutoModel,
    with the hub switched off and every proxy pointing at a closed port."""
    _, ours = trained
    root, _ = exports
    script = (
        "import sys, numpy as np, torch\n"
        "from sentence_transformers import SentenceTransformer\n"
        "from transformers import AutoModel\n"
        "texts = [l for l in open(sys.argv[3]).read().split('\\n') if l]\n"
        "np.save(sys.argv[4], SentenceTransformer(sys.argv[1], device='cpu').encode(texts))\n"
        "assert type(AutoModel.from_pretrained(sys.argv[2])).__name__ == 'BertModel'\n")
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS))
    dead = "http://127.0.0.1:9"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HTTPS_PROXY": dead,
           "HTTP_PROXY": dead, "https_proxy": dead, "http_proxy": dead, "NO_PROXY": "", "no_proxy": "",
           "HF_HOME": str(tmp_path / "hf-home")}                 # no cached hub files either
    run = subprocess.run([sys.executable, "-c", script, str(root / "sentence-transformers"), str(root / "hf"),
                          str(tmp_path / "texts.txt"), str(tmp_path / "st.npy")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    theirs = np.load(tmp_path / "st.npy")
    assert theirs.shape == ours.shape and _cosines(ours, theirs).min() >= 0.9999


@pytest.mark.parametrize("pooling", ["cls", "max", "mean_max"])
def test_every_pooling_becomes_the_same_sentence_transformers_pooling(pooling, tmp_path):
    from sentence_transformers import SentenceTransformer

    from core.config.schema import Config
    (tmp_path / "enc").mkdir()
    encoder = write_tiny_encoder(tmp_path / "enc")
    cfg = Config.from_yaml(REPO / "configs" / "quick.yaml", [f"model.encoder={encoder}", f"model.pooling={pooling}"])
    model = MultitaskBert.from_config(cfg).eval()
    model.save(tmp_path / "run")
    info = export_encoder(tmp_path / "run", tmp_path / "st", "sentence-transformers")
    theirs = SentenceTransformer(str(tmp_path / "st"), device="cpu", local_files_only=True).encode(TEXTS)
    ours = model.embed(TEXTS)
    assert info["embedding_dim"] == ours.shape[1] == (64 if pooling == "mean_max" else 32)
    assert _cosines(ours, theirs).min() >= 0.9999


@pytest.fixture
def tiny_run(tmp_path):
    from core.config.schema import Config
    (tmp_path / "enc").mkdir()
    cfg = Config.from_yaml(REPO / "configs" / "quick.yaml", [f"model.encoder={write_tiny_encoder(tmp_path / 'enc')}"])
    return MultitaskBert.from_config(cfg).save(tmp_path / "run")


def test_cli_formats_and_clear_errors(tiny_run, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main([str(tiny_run), str(out), "--format", "hf"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["format"] == "hf"
    assert main([str(tiny_run), str(out), "--format", "sentence-transformers"]) == 0   # replaces the export
    assert (out / "modules.json").is_file()
    capsys.readouterr()
    assert main([str(tiny_run), str(tmp_path / "x"), "--format", "hf", "--dtype", "float16"]) == 2
    assert "--dtype float16 is for --format minbert" in capsys.readouterr().err
    # a folder with other files is never replaced
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main([str(tiny_run), str(other), "--format", "hf"]) == 2
    assert "already holds other files" in capsys.readouterr().err and (other / "notes.txt").read_text() == "keep me"
    # a results-only run (the study keeps no weights)
    results_only = tmp_path / "results-only"
    results_only.mkdir()
    for name in ("config.json", "metrics.json"):
        (results_only / name).write_text((tiny_run / name).read_text() if name == "config.json" else "{}")
    assert main([str(results_only), str(tmp_path / "y"), "--format", "sentence-transformers"]) == 2
    assert "keeps results only" in capsys.readouterr().err
    with pytest.raises(MinbertError, match="unknown --format"):
        export_encoder(tiny_run, tmp_path / "z", "onnx")


def test_the_minbert_publication_path_is_unchanged(tiny_run, tmp_path, capsys):
    dst = tmp_path / "published"
    assert main([str(tiny_run), str(dst), "--data-dir", str(REPO / "data")]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    meta = json.loads((dst / "config.json").read_text())
    assert meta["weights_dtype"] == "float16" and meta["exported_from"] == "run"
    # re-evaluated on the full dev files (1,101 / 2,000 / 863 rows)
    assert (metrics["sst_n"], metrics["qqp_n"], metrics["sts_n"]) == (1101, 2000, 863) and "subset" not in metrics
    assert MultitaskBert.load(dst).predict_sentiment(["fine"]).shape == (1, 5)

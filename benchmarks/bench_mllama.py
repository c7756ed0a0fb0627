"""Llama-3.2-11B-Vision (``mllama``) at its real layer shapes, random weights: vlmforge against
transformers in the same process, runs alternating.

The checkpoint: the vision stack of the 11B whole (hidden 1280, 32 local + 8 global layers, 16
heads, MLP 5120, 560 px tiles of 14 px patches, up to 4 tiles, intermediate layers 3/7/15/23/30 →
7680-wide features) and a text model of the real widths (hidden 4096, MLP 14336, 32 heads, 8 KV
heads) but two decoder layers: layer 0 self-attention, layer 1 cross-attention. The vocabulary is
cut from 128256 to 32000 by default (``--vocab``): at 128256 the embedding and LM head are 4.2 GB of
FP32 per copy, and the run holds three (transformers, the exported graph, the runtime's embedding
table) beside the vision tower's 3.5 GB and its 6432×6432 attention maps — past 24 GiB.

Measured (medians over ``--rounds``, after ``--warmup`` uncounted rounds), for one wide picture
(1120×560 at 11b: a 1 × 2 tile grid; both sides pad to 4 tiles, so every picture costs the 4-tile encoder):
  vision+connector  transformers: vision_model + multi_modal_projector; vlmforge: its vision and
                    connector stages (GenerationStats)
  prefill           transformers: the prompt's forward (cross K/V inside it); vlmforge: cross_kv + prefill
  decode_step       one greedy step with the KV cache (vlmforge: engine + sampling + detokenising)
and whether both produce the same ``--new-tokens`` greedy tokens (EOS ignored).

    .venv/bin/python benchmarks/bench_mllama.py [--shape 11b|tiny] [--rounds 3] [--warmup 1]
        [--new-tokens 16] [--threads N] [--vocab 32000] [--json PATH] [--work-dir DIR]

``--shape tiny`` is a seconds-long configuration of the same code (tests/test_bench_mllama.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vlmforge.bench import ours_stage_times
from vlmforge.export.tiny import save_spread, train_tokenizer
from vlmforge.export.tiny_mllama import HEADER, IMAGE, MLLAMA_CHAT_TEMPLATE
from vlmforge.runtime.session import physical_cores

# Llama-3.2-11B-Vision's widths; ``vocab`` is cut (see the docstring), ``text_layers`` two of 40
SHAPES = {
    "11b": dict(vision_hidden=1280, vision_mlp=5120, vision_layers=32, global_layers=8, vision_heads=16,
                image_size=560, patch_size=14, max_tiles=4, intermediate_layers=[3, 7, 15, 23, 30],
                vision_output_dim=7680, hidden=4096, mlp=14336, heads=32, kv_heads=8, vocab=32000,
                max_positions=2048),
    "tiny": dict(vision_hidden=32, vision_mlp=64, vision_layers=3, global_layers=1, vision_heads=4,
                 image_size=28, patch_size=14, max_tiles=4, intermediate_layers=[0, 2],
                 vision_output_dim=96, hidden=64, mlp=128, heads=4, kv_heads=2, vocab=1000,
                 max_positions=512),
}
REAL_VOCAB = 128256
STAGES = ("vision+connector", "prefill", "decode_step")
GATES = ("gate", "gate_attn", "gate_ffn", "cross_attn_attn_gate", "cross_attn_mlp_gate")
MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the picture."}]}]


# -- the checkpoint (mirrors export/tiny_mllama.py, parametrised by shape) ---------------------
def mllama_config(s: dict, tokenizer):
    from transformers import MllamaConfig
    from transformers.models.mllama.image_processing_pil_mllama import get_all_supported_aspect_ratios

    vision = dict(hidden_size=s["vision_hidden"], intermediate_size=s["vision_mlp"], num_hidden_layers=s["vision_layers"],
                  num_global_layers=s["global_layers"], attention_heads=s["vision_heads"], image_size=s["image_size"],
                  patch_size=s["patch_size"], max_num_tiles=s["max_tiles"],
                  intermediate_layers_indices=s["intermediate_layers"], vision_output_dim=s["vision_output_dim"],
                  supported_aspect_ratios=[list(r) for r in get_all_supported_aspect_ratios(s["max_tiles"])])
    # vocab above the tokenizer's few hundred: ids it lacks decode to nothing, as transformers' do
    text = dict(vocab_size=max(s["vocab"], len(tokenizer)), hidden_size=s["hidden"], intermediate_size=s["mlp"],
                num_hidden_layers=2, cross_attention_layers=[1], num_attention_heads=s["heads"],
                num_key_value_heads=s["kv_heads"], max_position_embeddings=s["max_positions"],
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids(IMAGE))


def make_mllama(out: Path, s: dict, seed: int = 0) -> Path:
    """A random ``MllamaForConditionalGeneration`` of shape ``s`` with tokenizer and processor in ``out``."""
    from transformers import MllamaForConditionalGeneration, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(extra_special=(IMAGE, *HEADER), named_tokens={"image_token": IMAGE},
                                chat_template=MLLAMA_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(mllama_config(s, tokenizer)).eval()
    with torch.no_grad():  # tanh gates away from 0 (transformers starts them at 0: cross layers would add nothing)
        for name, p in model.named_parameters():
            if name.split(".")[-1] in GATES:
                p.copy_(torch.empty_like(p).uniform_(0.5, 1.5) * torch.sign(torch.randn_like(p)))
    save_spread(model, tokenizer, out)
    del model  # 7 GB at 11b: gone before the export loads its own copy
    gc.collect()
    processor = MllamaImageProcessorPil(size={"height": s["image_size"], "width": s["image_size"]},
                                        max_image_tiles=s["max_tiles"])
    MllamaProcessor(image_processor=processor, tokenizer=tokenizer, chat_template=MLLAMA_CHAT_TEMPLATE).save_pretrained(out)
    return out


def wide_picture(tile: int) -> np.ndarray:
    """A deterministic (tile, 2·tile, 3) uint8 picture: gradients and a bright square."""
    h, w = tile, 2 * tile
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], axis=-1).astype(np.uint8)
    img[h // 3 : h // 2, w // 3 : w // 2] = (250, 40, 40)
    return img


# -- transformers -------------------------------------------------------------------------------
class HFMllama:
    """transformers' mllama, greedy with its cache, stage by stage."""

    def __init__(self, model_dir: Path):
        from transformers import AutoProcessor, MllamaForConditionalGeneration

        self.model = MllamaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.image_processor = AutoProcessor.from_pretrained(model_dir).image_processor

    def inputs(self, ids: list[int], image: np.ndarray) -> dict:
        """Its processor's pixels and the dense cross mask (1, seq, images, max_tiles) for our prompt ids."""
        from transformers.models.mllama.processing_mllama import (convert_sparse_cross_attention_mask_to_dense,
                                                                  get_cross_attention_token_mask)

        pix = self.image_processor(images=[[image]], return_tensors="pt")
        sparse = [get_cross_attention_token_mask(ids, self.model.config.image_token_index)]
        mask = convert_sparse_cross_attention_mask_to_dense(sparse, pix["num_tiles"], pix["pixel_values"].shape[2], len(ids))
        return {"input_ids": torch.tensor([ids]), "pixel_values": pix["pixel_values"],
                "aspect_ratio_ids": pix["aspect_ratio_ids"], "aspect_ratio_mask": pix["aspect_ratio_mask"],
                "cross_attention_mask": torch.as_tensor(mask)}

    def run(self, inputs: dict, new_tokens: int) -> tuple[list[int], dict]:
        times = {s: [] for s in STAGES}
        with torch.no_grad():
            states = timed(times, "vision+connector", lambda: self.vision(inputs))
            out = timed(times, "prefill", lambda: self.model(
                input_ids=inputs["input_ids"], cross_attention_states=states,
                cross_attention_mask=inputs["cross_attention_mask"], use_cache=True, logits_to_keep=1))
            tokens, cache = [int(out.logits[0, -1].argmax())], out.cache
            last_row = inputs["cross_attention_mask"][:, -1:]  # what each new token sees: the prompt's last row
            for _ in range(new_tokens - 1):
                out = timed(times, "decode_step", lambda: self.model(
                    input_ids=torch.tensor([[tokens[-1]]]), cache=cache, cross_attention_mask=last_row,
                    use_cache=True))
                tokens.append(int(out.logits[0, -1].argmax()))
        return tokens, times

    def vision(self, inputs: dict) -> torch.Tensor:
        """vision_model + projector → cross_attention_states (images·max_tiles, P, hidden)."""
        m = self.model.model
        feats = m.vision_model(pixel_values=inputs["pixel_values"], aspect_ratio_ids=inputs["aspect_ratio_ids"],
                               aspect_ratio_mask=inputs["aspect_ratio_mask"]).last_hidden_state
        return m.multi_modal_projector(feats).reshape(-1, feats.shape[-2], m.hidden_size)


def timed(times: dict, stage: str, fn):
    start = time.perf_counter()
    out = fn()
    times[stage].append(time.perf_counter() - start)
    return out


# -- vlmforge -----------------------------------------------------------------------------------
def vlmforge_run(pipe, image: np.ndarray, new_tokens: int) -> tuple[list[int], dict]:
    result = pipe.generate(messages=MESSAGES, images=[image], max_new_tokens=new_tokens, ignore_eos=True)
    s, ours = result.stats.stages, ours_stage_times(result.stats)
    times = {"vision+connector": ours["vision+connector"],
             "prefill": [sum(s.get("cross_kv", [])) + sum(s.get("prefill", []))],  # cross K/V: transformers' prefill does it
             "decode_step": ours["decode_step"]}
    return result.token_ids, times


# -- the benchmark ------------------------------------------------------------------------------
def prepare_checkpoint(work: Path, s: dict, check_export: bool) -> tuple[Path, Path, float]:
    from vlmforge.export import export_model

    start = time.perf_counter()
    model_dir = make_mllama(work / "hf", s)
    export_model(model_dir, work / "onnx", overwrite=True, check=check_export)
    gc.collect()
    return model_dir, work / "onnx", time.perf_counter() - start


def run_bench(args) -> dict:
    from vlmforge.runtime import Pipeline

    s = {**SHAPES[args.shape], **({"vocab": args.vocab} if args.vocab else {})}
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        model_dir, out_dir, build_s = prepare_checkpoint(Path(tmp), s, args.check_export)
        # vision_cache_bytes=0: every generate runs the vision graph; verify=False: no hashing of GBs
        pipe = Pipeline.load(out_dir, backend="onnxruntime", verify=False, threads=args.threads, vision_cache_bytes=0)
        hf = HFMllama(model_dir)
        image = wide_picture(s["image_size"])
        ids = pipe.prompter.prepare_prompt(None, MESSAGES, 1, []).input_ids.tolist()
        inputs = hf.inputs(ids, image)
        rows, same = {s: {"transformers": [], "vlmforge": []} for s in STAGES}, []
        for r in range(args.warmup + args.rounds):  # alternating, so drift in the machine's load hits both
            theirs, hf_t = hf.run(inputs, args.new_tokens)
            ours, our_t = vlmforge_run(pipe, image, args.new_tokens)
            same.append(ours == theirs)
            if r >= args.warmup:
                for stage in STAGES:
                    rows[stage]["transformers"].append(statistics.median(hf_t[stage]))
                    rows[stage]["vlmforge"].append(statistics.median(our_t[stage]))
    return summary(args, s, rows, same, ours, theirs, len(ids), build_s)


def summary(args, s: dict, rows: dict, same: list, ours: list, theirs: list, prompt_tokens: int, build_s: float) -> dict:
    stages = {}
    for stage, v in rows.items():
        hf_ms, our_ms = 1e3 * statistics.median(v["transformers"]), 1e3 * statistics.median(v["vlmforge"])
        stages[stage] = {"transformers_ms": hf_ms, "vlmforge_ms": our_ms, "ratio": hf_ms / our_ms}
    return {"shape": args.shape, "config": s, "vocab_cut": s["vocab"] < REAL_VOCAB and args.shape == "11b",
            "threads": args.threads, "rounds": args.rounds, "warmup": args.warmup, "prompt_tokens": prompt_tokens,
            "new_tokens": args.new_tokens, "stages": stages, "tokens_identical": all(same),
            "tokens": {"vlmforge": ours, "transformers": theirs}, "build_and_export_s": build_s,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # ru_maxrss: KiB on Linux


def format_table(report: dict) -> str:
    lines = [f"{'stage':<18}{'transformers ms':>17}{'vlmforge ms':>13}{'ratio':>8}"]
    for name, st in report["stages"].items():
        lines.append(f"{name:<18}{st['transformers_ms']:>17.2f}{st['vlmforge_ms']:>13.2f}{st['ratio']:>7.2f}×")
    c = report["config"]
    lines += [
        f"shape {report['shape']}: text vocab {c['vocab']}"
        + (f" (cut from {REAL_VOCAB} to fit 24 GiB)" if report["vocab_cut"] else ""),
        f"{report['rounds']} rounds after {report['warmup']} warm-up, {report['threads']} threads, "
        f"{report['prompt_tokens']}-token prompt, {report['new_tokens']} new tokens: "
        + ("tokens identical" if report["tokens_identical"] else "TOKENS DIFFER"),
        f"build + export {report['build_and_export_s']:.1f} s, peak RSS {report['peak_rss_gib']:.1f} GiB",
    ]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="11b")
    p.add_argument("--rounds", type=int, default=3, help="counted rounds (each: transformers, then vlmforge)")
    p.add_argument("--warmup", type=int, default=1, help="uncounted rounds first")
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=physical_cores(), help="torch and ONNX Runtime threads")
    p.add_argument("--vocab", type=int, default=None, help=f"text vocabulary (11b default 32000; real {REAL_VOCAB})")
    p.add_argument("--check-export", action="store_true", help="export_model's per-graph check (minutes at 11b)")
    p.add_argument("--work-dir", default=None, help="where the checkpoint and export go (a temporary folder in it)")
    p.add_argument("--json", default=None, help="write the report here")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or args.new_tokens < 2:
        p.error("--rounds must be ≥ 1, --warmup ≥ 0 and --new-tokens ≥ 2 (a decode step needs a second token)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    report = run_bench(args)
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()

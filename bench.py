"""``vlmforge bench``: the same checkpoint, image and prompt through transformers (torch eager,
FP32, greedy) and through vlmforge, runs alternating, per stage and end to end, after checking
that both generate the same tokens.

transformers' stages are timed the same way ours are: image processor (PIL backend), vision
tower + projector (``get_image_features``), merge, prefill of the merged prompt, then one
forward per new token with a ``DynamicCache``. Supported: LLaVA-family checkpoints.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import numpy as np

STAGES = ("preprocess", "vision+connector", "merge", "prefill", "decode_step")


def memory_bandwidth_gbs(num_bytes: int = 1 << 29, repeats: int = 5, threads: int | None = None) -> float:
    """Weight-streaming read bandwidth, measured the way a decode step reads weights: ONNX Runtime
    multiplying a (1, K) vector by a ``num_bytes`` float32 matrix on the engine's thread count
    (physical cores). Best of ``repeats``, GB/s of matrix bytes read. A single-threaded copy
    under-reports what the cores pull together (24 vs 37 GB/s on the 2-core machine of the README)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from .runtime.session import physical_cores

    k = 4096
    n = num_bytes // (4 * k)
    weight = numpy_helper.from_array(np.full((k, n), 0.5, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "gemv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or physical_cores()
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.ones((1, k), dtype=np.float32)
    session.run(None, {"x": x})  # first touch: the weights are paged in
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"x": x})
        best = min(best, time.perf_counter() - start)
    return 4 * k * n / best / 1e9


class HFRunner:
    """transformers' LLaVA, stage by stage, greedy, fixed number of new tokens."""

    def __init__(self, model_dir: Path):
        import torch
        from transformers import AutoModelForImageTextToText

        self.torch = torch
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir, attn_implementation="eager",
                                                                 dtype=torch.float32).eval()
        if not hasattr(self.model, "get_image_features") or not hasattr(self.model.model, "language_model"):
            raise ValueError(f"bench supports LLaVA-family checkpoints; {type(self.model).__name__} is not one")
        self.processor = _image_processor(model_dir)
        params = inspect.signature(self.model.model.language_model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def run(self, input_ids: np.ndarray, image: np.ndarray, max_new_tokens: int) -> tuple[list[int], dict]:
        torch, model = self.torch, self.model
        times = {s: [] for s in STAGES}
        with torch.inference_mode():
            pixels = _timed(times, "preprocess", lambda: self.processor(images=[image], return_tensors="pt")["pixel_values"])
            feats = _timed(times, "vision+connector", lambda: torch.cat(list(
                model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output)))
            ids = torch.as_tensor(input_ids)[None]
            embeds = _timed(times, "merge", lambda: model.get_input_embeddings()(ids).masked_scatter(
                (ids == model.config.image_token_id)[..., None], feats))
            return self._decode(embeds, max_new_tokens, times), times

    def _decode(self, embeds, max_new_tokens: int, times: dict) -> list[int]:
        from transformers.cache_utils import DynamicCache

        lm, head, embed = self.model.model.language_model, self.model.lm_head, self.model.get_input_embeddings()
        cache = DynamicCache(config=lm.config)

        def step(x):
            out = lm(inputs_embeds=x, use_cache=True, **{self.cache_arg: cache})
            return int(head(out.last_hidden_state[:, -1]).argmax(-1))

        tokens = [_timed(times, "prefill", lambda: step(embeds))]
        for _ in range(max_new_tokens - 1):
            tokens.append(_timed(times, "decode_step", lambda: step(embed(self.torch.tensor([[tokens[-1]]])))))
        return tokens


def _image_processor(model_dir: Path):
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    return LlavaImageProcessorPil.from_pretrained(model_dir)


def _timed(times: dict, stage: str, fn):
    start = time.perf_counter()
    out = fn()
    times[stage].append(time.perf_counter() - start)
    return out


def ours_stage_times(stats) -> dict:
    s = stats.stages
    return {
        "preprocess": [sum(s.get("preprocess", []))],
        "vision+connector": [sum(s.get("vision", [])) + sum(s.get("connector", []))],
        "merge": [sum(s.get("merge", []))],
        "prefill": [sum(s.get("prefill", []))],
        # one step = engine + sampling + detokenising, as transformers' step includes its argmax
        "decode_step": [d + p + q for d, p, q in zip(s.get("decode", []), s.get("sample", [])[1:], s.get("detokenize", [])[1:])],
    }


def run_bench(export_dir, model_dir, image=None, prompt=None, runs: int = 3, max_new_tokens: int = 32) -> dict:
    """Alternate transformers and vlmforge runs; return medians per stage and derived figures."""
    from .runtime import Pipeline
    from .runtime.images import load_image

    pipe = Pipeline.load(export_dir, backend="onnxruntime", verify=False, vision_cache_bytes=0)  # time every vision call
    hf = HFRunner(Path(model_dir))
    rgb = load_image(image) if image is not None else _default_picture()
    prompt = prompt or "USER: <image>\nDescribe the picture in detail. ASSISTANT:"
    ours_t, theirs_t, host, ours_tok = {s: [] for s in STAGES}, {s: [] for s in STAGES}, [], None
    for _ in range(runs + 1):  # the first pair warms both up and is not counted
        tokens, hf_times = hf.run(_prompt_ids(pipe, prompt, rgb), rgb, max_new_tokens)
        result = pipe.generate(prompt, images=[rgb], max_new_tokens=max_new_tokens, ignore_eos=True)
        if result.token_ids != tokens:
            raise RuntimeError(f"vlmforge and transformers disagree:\n ours   {result.token_ids}\n theirs {tokens}")
        for s in STAGES:
            theirs_t[s].append(float(np.median(hf_times[s])) if hf_times[s] else 0.0)
            ours_t[s].append(float(np.median(ours_stage_times(result.stats)[s] or [0.0])))
        # host overhead of each decode step: its wall time minus its own engine call (the prefill's chunks come first)
        steps = ours_stage_times(result.stats)["decode_step"]
        host.append(float(np.median([w - e for w, e in zip(steps, pipe.decoder.engine_s[-len(steps):])])))
        ours_tok = result
    return _summary(pipe, ours_t, theirs_t, host, ours_tok, runs)


def _prompt_ids(pipe, prompt: str, rgb: np.ndarray) -> np.ndarray:
    from .kernels import tile_and_patchify

    _, layout = tile_and_patchify(rgb, pipe.manifest.image.preprocess)
    return pipe.prepare_prompt(prompt, None, 1, [layout.num_image_tokens]).input_ids


def _default_picture(h: int = 480, w: int = 640) -> np.ndarray:
    """A deterministic 640×480 test picture: colour gradients with a bright square."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], axis=-1).astype(np.uint8)
    img[h // 3 : h // 2, w // 3 : w // 2] = (250, 40, 40)
    return img


def _summary(pipe, ours_t: dict, theirs_t: dict, host: list, result, runs: int) -> dict:
    med = lambda v: float(np.median(v[1:])) if len(v) > 1 else float(np.median(v))  # noqa: E731
    stages = {s: {"transformers_s": med(theirs_t[s]), "vlmforge_s": med(ours_t[s])} for s in STAGES}
    for s in stages.values():
        s["speedup"] = s["transformers_s"] / s["vlmforge_s"] if s["vlmforge_s"] else float("nan")
    ttft = lambda t: sum(med(t[s]) for s in ("preprocess", "vision+connector", "merge", "prefill"))  # noqa: E731
    weight_bytes = _llm_weight_bytes(pipe)
    bandwidth = memory_bandwidth_gbs()
    return {
        "runs": runs, "prompt_tokens": result.stats.num_prompt_tokens, "new_tokens": len(result.token_ids),
        "stages": stages,
        "ttft_s": {"transformers": ttft(theirs_t), "vlmforge": ttft(ours_t)},
        "decode_tokens_per_s": {"transformers": 1 / stages["decode_step"]["transformers_s"],
                                "vlmforge": 1 / stages["decode_step"]["vlmforge_s"]},
        "host_overhead_per_step_s": med(host),  # per-run medians of (step wall − that step's engine time)
        "llm_weight_bytes": weight_bytes,
        "lm_head": pipe.manifest.llm.head,
        "memory_bandwidth_gbs": bandwidth,
        "bandwidth_bound_tokens_per_s": bandwidth * 1e9 / weight_bytes,
    }


def _llm_weight_bytes(pipe) -> int:
    """Bytes of weights the LLM graph reads per token: its ONNX file(s) — every weight is touched
    once per decode step (the embedding row gather is negligible) — except, with a screened head,
    its FP32 rows (vocab × hidden), of which a step gathers only a few dozen candidates."""
    llm, spec = pipe.manifest.graphs["llm"].path, pipe.manifest.llm
    file_bytes = sum(a.bytes for name, a in pipe.manifest.artifacts.items() if name.startswith(llm))
    return file_bytes - (4 * spec.vocab_size * spec.hidden_size if spec.head == "screened" else 0)


def format_bench(report: dict) -> str:
    lines = [f"{'stage':<18}{'transformers ms':>17}{'vlmforge ms':>13}{'speedup':>9}"]
    for name, s in report["stages"].items():
        lines.append(f"{name:<18}{s['transformers_s'] * 1e3:>17.2f}{s['vlmforge_s'] * 1e3:>13.2f}{s['speedup']:>8.2f}×")
    t, d = report["ttft_s"], report["decode_tokens_per_s"]
    lines += [
        f"time to first token {t['transformers'] * 1e3:>15.1f}{t['vlmforge'] * 1e3:>13.1f}{t['transformers'] / t['vlmforge']:>8.2f}×",
        f"decode tokens/s     {d['transformers']:>15.2f}{d['vlmforge']:>13.2f}{d['vlmforge'] / d['transformers']:>8.2f}×",
        f"host overhead per decode step: {report['host_overhead_per_step_s'] * 1e3:.3f} ms",
        f"memory bandwidth {report['memory_bandwidth_gbs']:.1f} GB/s; LLM weights read per token "
        f"{report['llm_weight_bytes'] / 1e9:.2f} GB ({report['lm_head']} LM head) → bound {report['bandwidth_bound_tokens_per_s']:.1f} tokens/s",
        f"({report['runs']} runs, {report['prompt_tokens']}-token prompt, {report['new_tokens']} new tokens, tokens identical)",
    ]
    return "\n".join(lines)

"""``verify_model``: run a quantised folder and its float reference side by side through the
real pipeline stages and report the fidelity of every stage (see ``fidelity.py``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..runtime.decode import decode_one_token, prefill
from ..runtime.stats import NullTimer
from .fidelity import Accumulator, FidelityReport, TokenAgreement, kl_divergence
from .precision import QuantizationError
from .samples import load_samples
from .stages import encode_sample, require_decoder_only


def verify_model(
    model_dir: str | Path,
    reference_dir: str | Path,
    *,
    images: str | Path | None = None,
    prompts: str | Path | None = None,
    num_samples: int = 50,
    new_tokens: int = 8,
    seed: int = 1,
    shapes_suite: int = 0,
) -> FidelityReport:
    """Compare ``model_dir`` with ``reference_dir`` on image + prompt pairs (synthetic when no images)."""
    from ..runtime import Pipeline

    start = time.perf_counter()
    ref = Pipeline.load(reference_dir, backend="onnxruntime")
    quant = Pipeline.load(model_dir, backend="onnxruntime")
    _check_pair(quant.manifest, ref.manifest, model_dir, reference_dir)
    require_decoder_only(ref.manifest, "verify")
    samples = load_samples(images, prompts, num_samples, seed=seed)
    report = FidelityReport(
        model=str(model_dir), reference=str(reference_dir),
        precision={g: s.precision for g, s in quant.manifest.graphs.items()},
        num_samples=len(samples.samples), samples=samples.source, new_tokens=new_tokens,
    )
    _compare(ref, quant, samples.samples, new_tokens, report)
    if shapes_suite:
        report.shapes_suite = shapes_suite_accuracy(quant, ref, shapes_suite)
    report.seconds = time.perf_counter() - start
    return report


def _check_pair(quant, ref, model_dir, reference_dir) -> None:
    """The reference must be the float export the model was quantised from."""
    for name, spec in quant.graphs.items():
        if name not in ref.graphs:
            raise QuantizationError(f"{reference_dir} has no {name} graph; pass the export {model_dir} was quantised from")
        if ref.graphs[name].precision != "fp32":
            raise QuantizationError(f"the reference {reference_dir} is not fp32 ({name} is {ref.graphs[name].precision}); "
                                    "pass the float export as --reference")
        source = (spec.quantization or {}).get("source_sha256")
        if source and source != ref.artifacts[ref.graphs[name].path].sha256:
            raise QuantizationError(f"{model_dir}'s {name} graph was quantised from another graph than {reference_dir}'s; "
                                    "pass the export it was quantised from as --reference")


def _compare(ref, quant, samples, new_tokens: int, report: FidelityReport) -> None:
    vision, conn_iso, conn_e2e = Accumulator(), Accumulator(), Accumulator()
    kl_iso, kl_e2e, top1 = [], [], []
    agreement = TokenAgreement()
    for sample in samples:
        r, q = encode_sample(ref, sample), encode_sample(quant, sample)
        if "vision" in r.outputs:  # same tiles in: the quantised vision output is its isolated error
            vision.add(r.outputs["vision"]["image_features"], q.outputs["vision"]["image_features"])
        conn_iso.add(r.outputs["connector"]["image_embeds"], quant.connector.run(r.feeds["connector"])["image_embeds"])
        conn_e2e.add(r.outputs["connector"]["image_embeds"], q.outputs["connector"]["image_embeds"])
        ref_logits, ref_tokens = greedy(ref, r.inputs_embeds, new_tokens)
        kl_iso.append(kl_divergence(ref_logits[0], fresh_prefill(quant, r.inputs_embeds)))
        logits = teacher_forced(quant, q.inputs_embeds, ref_tokens)
        kl_e2e.append(kl_divergence(ref_logits[0], logits[0]))
        top1.append(int(np.argmax(logits[0])) == ref_tokens[0])
        agreement.add(ref_tokens, [int(np.argmax(x)) for x in logits])
    report.vision, report.connector_isolated, report.connector_end_to_end = vision.result(), conn_iso.result(), conn_e2e.result()
    report.kl_prefill_isolated = {"mean": float(np.mean(kl_iso)), "max": float(np.max(kl_iso))}
    report.kl_prefill_end_to_end = {"mean": float(np.mean(kl_e2e)), "max": float(np.max(kl_e2e))}
    report.prefill_top1_agreement = float(np.mean(top1))
    report.token_agreement = agreement.matches / max(agreement.positions, 1)
    report.sequence_match = agreement.identical_samples / max(len(samples), 1)
    report.mean_first_miss = float(np.mean(agreement.first_miss))


def fresh_prefill(pipe, inputs_embeds: np.ndarray) -> np.ndarray:
    """An empty cache, then the prompt → next-token logits (vocab,)."""
    pipe.decoder.reset()
    return np.array(prefill(pipe.decoder, inputs_embeds, NullTimer()), dtype=np.float32)  # own copy: decoders reuse buffers


def greedy(pipe, inputs_embeds: np.ndarray, new_tokens: int) -> tuple[list[np.ndarray], list[int]]:
    """Greedy decoding for exactly ``new_tokens`` (EOS does not stop it): logits and tokens per position."""
    logits = [fresh_prefill(pipe, inputs_embeds)]
    tokens = [int(np.argmax(logits[-1]))]
    while len(tokens) < new_tokens:
        logits.append(np.array(decode_one_token(pipe.decoder, pipe.embed_table, tokens[-1], NullTimer()), dtype=np.float32))
        tokens.append(int(np.argmax(logits[-1])))
    return logits, tokens


def teacher_forced(pipe, inputs_embeds: np.ndarray, tokens: list[int]) -> list[np.ndarray]:
    """Logits at each position when ``tokens`` (the reference's) are fed in turn."""
    logits = [fresh_prefill(pipe, inputs_embeds)]
    for token in tokens[:-1]:
        logits.append(np.array(decode_one_token(pipe.decoder, pipe.embed_table, token, NullTimer()), dtype=np.float32))
    return logits


def shapes_suite_accuracy(quant, ref, n: int) -> dict:
    """Exact-match accuracy of both models on ``n`` held-out questions of the bundled model's
    shapes task (``vlmforge eval``'s suite; meaningful only for that model)."""
    try:
        from ..examples.evaluate import evaluate
    except ImportError:
        raise QuantizationError("the shapes suite needs vlmforge.examples.evaluate (vlmforge eval), which this "
                                "installation lacks; drop --shapes-suite") from None
    model, reference = evaluate(quant, "shapes", n=n), evaluate(ref, "shapes", n=n)
    return {"n": model.n, "model": model.accuracy, "reference": reference.accuracy}

"""``Pipeline``: load an exported folder and generate. The step reads like the model:
images → tiles → vision → connector → merge into the prompt → prefill → decode."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .backends import open_backend, open_graph
from .decode import generate_tokens, prefill
from .errors import PromptError, VlmforgeError
from .features import pack_image_features
from .images import load_image
from ..kernels import PreprocessSpec, TileLayout, vision_geometry
from ..kernels.native import native_video
from .budget import call_spec
from .manifest import Manifest, load_manifest
from .positions import Positions, plan_positions
from .preprocess import choose_preprocess
from .media import Media, as_list, frame_timestamps, in_prompt_order, video_time_step
from .prompt import PreparedPrompt
from .prompting import Prompter
from .video import load_video, sample_frames
from .sampling import Sampler, SamplingParams, check_max_new_tokens
from .stats import GenerationStats, StageTimer
from .stream import TextAssembler, TextStream, stop_list
from .token_inputs import plan_token_inputs
from .tokenizer import TextTokenizer
from .turns import DecoderTurns


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]  # generated ids, prompt excluded (EOS included when it ended the text)
    stats: GenerationStats
    finish_reason: str  # "eos", "stop" (a stop string) or "length"


class Pipeline:
    def __init__(self, root: Path, manifest: Manifest, backend: str = "auto", threads: int | None = None, verify: bool = True,
                 preprocess: str = "auto", max_image_pixels: int | None = None):
        self.root = root
        self.manifest = manifest
        if max_image_pixels is not None:  # the limit checked from each file's header, before decoding
            if not isinstance(max_image_pixels, int) or isinstance(max_image_pixels, bool) or max_image_pixels < 1:
                raise ValueError(f"max_image_pixels must be a positive integer, got {max_image_pixels!r}")
            manifest.image.preprocess = dataclasses.replace(manifest.image.preprocess, max_input_pixels=max_image_pixels)
        self.tokenizer = TextTokenizer(root, manifest.tokenizer)
        self.prompter = Prompter(manifest, self.tokenizer)  # text + placeholders → token ids with slots
        # backend "auto": TensorRT when the folder has engines and this machine can run them
        self.backend, self.vision, self.connector, self.decoder = open_backend(root, manifest, backend, threads, verify)
        # (vocab, hidden), memory-mapped: rows are read on demand, never loaded twice
        self.embed_table = np.load(root / manifest.embeddings.name, mmap_mode="r")
        # encoder-decoder LMs: the prompt encoder and the memory's cross-attention K/V
        if manifest.capabilities.cross_attention and not hasattr(self.decoder, "set_memory"):
            raise VlmforgeError(
                f"cross-attention models ({manifest.family}) run on the onnxruntime backend only for now; "
                f"use backend='onnxruntime' instead of {self.backend!r}"
            )
        self.encoder = open_graph(root, manifest, "encoder", self.backend, threads) if "encoder" in manifest.graphs else None
        self.cross_kv = open_graph(root, manifest, "cross_kv", self.backend, threads) if "cross_kv" in manifest.graphs else None
        connector_tok = manifest.image.connector_tokenizer
        self.connector_tokenizer = TextTokenizer(root, connector_tok) if connector_tok else None
        # rgb → (pixels, layout): the CPU kernel (C or NumPy), or (auto, TensorRT) the CUDA kernel into the first engine's device input
        self.preprocess = choose_preprocess(manifest.image.preprocess, self.vision or self.connector, preprocess)
        self.image_newline = self._newline_embedding()  # (hidden,) or None
        sep = self.manifest.image.separator_path if self.manifest.image else None
        self.view_separator = np.load(self.root / sep) if sep else None  # hd: (hidden,) or None
        self._turns = DecoderTurns(self.decoder)  # calls from many threads / interleaved streams take turns
        self._local = threading.local()  # last_result, per thread

    def _newline_embedding(self) -> np.ndarray | None:
        """What ends each row of image tokens: a learned vector (LLaVA-NeXT) or a text token's embedding (Fuyu)."""
        image = self.manifest.image
        if image.newline_path:
            return np.load(self.root / image.newline_path)
        if image.newline_token_id is not None:
            return np.asarray(self.embed_table[image.newline_token_id], dtype=np.float32)
        return None

    @classmethod
    def load(cls, model_dir: str | Path, backend: str = "auto", verify: bool = True, threads=None, preprocess: str = "auto",
             max_image_pixels: int | None = None) -> "Pipeline":
        """``preprocess``: "auto" (the CUDA kernel when the backend is TensorRT, else the CPU kernel), "cpu" or "gpu".
        ``max_image_pixels``: larger pictures are refused from their header (default: the export's, 50 MP)."""
        root = Path(model_dir)
        return cls(root, load_manifest(root, verify=verify), backend, threads, verify, preprocess, max_image_pixels)

    # -- stages -----------------------------------------------------------------------------
    def encode_image(self, image, timer: StageTimer, prompt_text: str = "") -> np.ndarray:
        """One image (path / PIL / array) → its embeddings (num_image_tokens, hidden).

        ``prompt_text`` feeds connectors that read the instruction too (``connector_text_inputs``)."""
        return self._encode(image, timer, prompt_text).embeds

    def _encode(self, image, timer: StageTimer, prompt_text: str = "", spec: PreprocessSpec | None = None) -> Media:
        """→ its embeddings and the kernel's layout (its grid places the image's tokens for the position
        scheme). ``spec``: this call's preprocessing (a smaller image budget), default the export's."""
        spec = spec or self.manifest.image.preprocess
        with timer("image_decode"):
            rgb = load_image(image, spec.max_input_pixels)
        with timer("preprocess", self.preprocess):
            pixels, layout = self.preprocess(rgb, spec)
        embeds, extras = self._embed_pixels(pixels, layout, spec, timer, prompt_text)
        embeds = pack_image_features(embeds, rgb.shape[:2], spec, self.image_newline, self.view_separator)
        assert embeds.shape[0] == layout.num_image_tokens, (embeds.shape, layout)
        return Media(embeds, layout, extras=extras)

    def _encode_video(self, video, timer: StageTimer, spec: PreprocessSpec, fps, sample_fps=None) -> Media:
        """A video (frames array, list of pictures, folder, file) taken at ``fps`` → its embeddings and
        token layout; with ``sample_fps`` its frames are first sampled down to that rate."""
        image = self.manifest.image
        if image.video_token_id is None or spec.scheme != "native":
            raise PromptError(f"{self.manifest.family} takes no videos; pass pictures in images=[...]")
        if self.preprocess.device != "cpu":
            raise VlmforgeError("videos are preprocessed by the CPU kernel only for now; load with preprocess='cpu'")
        step = video_time_step(spec, self.manifest.llm.positions.tokens_per_second, sample_fps or fps)
        with timer("image_decode"):
            frames = load_video(video, spec.max_input_pixels)
            kept = np.arange(len(frames))
            if sample_fps is not None:
                kept = sample_frames(len(frames), fps, sample_fps, spec.temporal_patch_size, rule=spec.frame_sampling)
                frames = frames[kept]
        with timer("preprocess", self.preprocess):
            pixels, layout = native_video(frames, spec, self.preprocess.kernel)
        embeds, extras = self._embed_pixels(pixels, layout, spec, timer, "")
        return Media(embeds.reshape(-1, embeds.shape[-1]), layout, step, extras,
                     frame_timestamps(kept, fps, spec.temporal_patch_size))

    def _embed_pixels(self, pixels, layout: TileLayout, spec: PreprocessSpec, timer: StageTimer, prompt_text: str):
        """Pixels → vision → connector: (image_embeds before any per-scheme packing, the connector's
        other outputs by name — Qwen3-VL's deepstack_embeds)."""
        outputs = {"image_features": pixels}  # no vision graph: the patches are the features (Fuyu)
        if self.vision is not None:
            # the geometry a native-resolution tower needs (rotary positions …) comes from the grid, on the host
            feeds = {"pixel_values": pixels, **vision_geometry(layout, spec)}
            with timer("vision", self.vision):
                outputs = self.vision.run(feeds)
        if self.connector is None:  # the decoder reads vision features directly (BLIP)
            return outputs["image_features"], {}
        names = self.manifest.graphs["connector"].input_names  # image_features [, deepstack_features]
        feeds = {name: outputs[name] for name in names if name in outputs}
        if self.manifest.capabilities.connector_text_inputs:
            feeds.update(self.connector_text_feeds(prompt_text, outputs["image_features"].shape[0]))
        with timer("connector", self.connector):
            out = self.connector.run(feeds)
        return out["image_embeds"], {k: v for k, v in out.items() if k != "image_embeds"}

    def connector_text_feeds(self, text: str, num_tiles: int) -> dict[str, np.ndarray]:
        """The prompt in the connector's own vocabulary: (tiles, length) ids and mask."""
        ids = self.connector_tokenizer.encode(text)
        ids = np.broadcast_to(ids, (num_tiles, ids.shape[0])).copy()
        return {"qformer_input_ids": ids, "qformer_attention_mask": np.ones_like(ids)}

    # -- prompts (runtime/prompting.py) ------------------------------------------------------
    def prompt_text(self, prompt: str | None, messages, num_images: int, num_videos: int = 0) -> str:
        return self.prompter.prompt_text(prompt, messages, num_images, num_videos)

    def turn_prompt(self, text: str, num_images: int, system: str | None = None, num_videos: int = 0) -> str:
        """A plain question → one user turn in the model's chat template (see ``Prompter.turn_prompt``)."""
        return self.prompter.turn_prompt(text, num_images, system, num_videos)

    def prepare_prompt(self, prompt: str | None, messages, num_images: int, tokens_per_image: list[int],
                       tokens_per_video: list[int] = ()) -> PreparedPrompt:
        return self.prompter.prepare_prompt(prompt, messages, num_images, tokens_per_image, tokens_per_video)

    def merge(self, prepared: PreparedPrompt, image_embeds: list[np.ndarray]) -> np.ndarray:
        """Gather text embeddings and write each image's embeddings into its slots → (1, seq, d)."""
        embeds = np.asarray(self.embed_table[prepared.input_ids], dtype=np.float32)
        for (start, count), rows in zip(prepared.image_slots, image_embeds):
            embeds[start : start + count] = rows
        return embeds[None]

    # -- generation --------------------------------------------------------------------------
    def generate(self, prompt: str | None = None, images=None, **kwargs) -> GenerationResult:
        pieces = self.stream(prompt, images, **kwargs)
        for _ in pieces:
            pass
        return pieces.result

    def stream(self, prompt: str | None = None, images=None, **kwargs) -> TextStream:
        """An iterator of text pieces as they are decoded; once exhausted its ``.result`` (and this
        thread's ``last_result``) is the GenerationResult. Safe from several threads and interleaved
        with other streams: each runs its steps with its own KV cache (runtime/turns.py)."""
        out = TextStream()

        def done(result: GenerationResult) -> None:
            out.result = self._local.result = result

        out.pieces = self._turns.run(self._generate(prompt, images, done=done, **kwargs))
        return out

    @property
    def last_result(self) -> GenerationResult | None:
        """The result of this thread's last finished generate() / stream()."""
        return getattr(self._local, "result", None)

    def _generate(
        self,
        prompt=None,
        images=None,
        *,
        messages=None,
        max_new_tokens: int | None = None,
        stop: list[str] | None = None,
        timer: StageTimer | None = None,
        ignore_eos: bool = False,
        max_pixels: int | None = None,
        videos=None,
        video_fps: float = 2.0,
        sample_fps: float | None = None,
        done=lambda result: None,
        **sampling,
    ) -> Iterator[str]:
        start = time.perf_counter()
        sampler = Sampler(self._sampling_params(sampling))  # bad arguments are refused before any work
        stop = stop_list(stop)
        check_max_new_tokens(max_new_tokens)
        spec = call_spec(self.manifest.image.preprocess, max_pixels)  # this call's image budget
        timer = StageTimer() if timer is None else timer
        images, videos = as_list(images), as_list(videos)
        text = self.prompt_text(prompt, messages, len(images), len(videos))
        pictures = [self._encode(img, timer, text, spec) for img in images]
        clips = [self._encode_video(v, timer, spec, video_fps, sample_fps) for v in videos]
        if self.manifest.image.video_frame_template:  # every temporal patch its own run of slots (Qwen3-VL)
            text = self.prompter.expand_video_frames(text, [c.timestamps for c in clips])
            clips = [patch for c in clips for patch in c.temporal_patches()]
        prepared = self.prepare_prompt(text, None, len(images), [m.embeds.shape[0] for m in pictures],
                                       [m.embeds.shape[0] for m in clips])
        media = in_prompt_order(prepared, pictures, clips, self.manifest.image.image_token_id)
        embeds = [m.embeds for m in media]
        max_new = self._budget(prepared, max_new_tokens)
        with timer("merge"):
            inputs_embeds = self.merge(prepared, embeds)
        inputs_embeds, decoder_ids = self.attach_memory(inputs_embeds, prepared, embeds, timer)
        positions = self.positions(len(decoder_ids), prepared, media)
        feeds = plan_token_inputs(self.manifest.llm, len(decoder_ids), prepared.image_slots, media)
        logits = prefill(self.decoder, inputs_embeds, timer, positions, feeds)
        # ignore_eos: profiling decodes exactly max_new_tokens, like benchmark harnesses do
        eos = set() if ignore_eos else set(self.manifest.tokenizer.eos_token_ids)
        text = TextAssembler(self.tokenizer.stream(), self.manifest.generation.stop_strings if stop is None else stop)
        generated, ttft, reason = [], 0.0, "length"
        for token in generate_tokens(self.decoder, self.embed_table, logits, decoder_ids, sampler, max_new, eos, timer,
                                     positions, feeds):
            ttft = ttft or time.perf_counter() - start
            generated.append(token)
            if token in eos:
                reason = "eos"
                break
            with timer("detokenize"):
                piece = text.push(token)
            if piece:
                yield piece
            if text.stopped:
                reason = "stop"
                break
        tail = text.flush()
        if tail:
            yield tail
        stats = GenerationStats(
            stages=dict(timer.times),
            starts=dict(timer.starts),
            gpu_stages=dict(timer.gpu_times),
            num_prompt_tokens=len(prepared.input_ids),
            num_image_tokens=prepared.num_image_tokens,
            image_tokens=[count for _, count in prepared.image_slots],
            num_generated_tokens=len(generated),
            ttft_s=ttft,
            total_s=time.perf_counter() - start,
            kv_cache_bytes=self.decoder.cache.nbytes,
        )
        done(GenerationResult(text.text, generated, stats, reason))

    def positions(self, seq_len: int, prepared: PreparedPrompt, media: list[Media]) -> Positions:
        """The prefill's position_ids and where decoding continues, by the manifest's scheme."""
        spec = self.manifest.llm.positions
        m = spec.spatial_merge_size
        grids = [(x.layout.frames, x.layout.grid[0] // m, x.layout.grid[1] // m) for x in media]
        slots = prepared.image_slots if seq_len == len(prepared.input_ids) else []  # encoder-decoder: start token only
        return plan_positions(spec, seq_len, slots, grids, [x.time_step for x in media])

    def attach_memory(self, inputs_embeds: np.ndarray, prepared: PreparedPrompt, image_embeds, timer: StageTimer):
        """Reset the decoder; for encoder-decoder models encode the prompt once, hand the decoder its
        cross-attention K/V and start it from ``decoder_start_token_id``.

        Returns (decoder inputs_embeds (1, s, d), decoder prompt ids)."""
        self.decoder.reset()
        caps = self.manifest.capabilities
        if caps.encoder_decoder:
            mask = np.ones(inputs_embeds.shape[:2], dtype=np.int64)
            with timer("encoder"):
                feeds = {"inputs_embeds": inputs_embeds, "attention_mask": mask}
                memory = self.encoder.run(feeds)["encoder_hidden_states"]
            self.set_cross_memory(memory, timer)
            start = np.array([self.manifest.generation.decoder_start_token_id], dtype=np.int64)
            return np.asarray(self.embed_table[start], dtype=np.float32)[None], start
        if caps.cross_attention:  # the image embeddings themselves are the memory (BLIP)
            if not image_embeds:
                raise PromptError(f"{self.manifest.family} captions an image: pass one in images=[...]")
            self.set_cross_memory(np.concatenate(image_embeds)[None], timer)
        return inputs_embeds, prepared.input_ids

    def set_cross_memory(self, memory: np.ndarray, timer: StageTimer) -> None:
        """memory (1, m, d) → every decoder layer's cross K/V, computed once and bound to each step."""
        with timer("cross_kv"):
            cross = self.cross_kv.run({"encoder_hidden_states": np.ascontiguousarray(memory, dtype=np.float32)})
        self.decoder.set_memory({**cross, "encoder_attention_mask": np.ones(memory.shape[:2], dtype=np.int64)})

    def _budget(self, prepared: PreparedPrompt, max_new_tokens: int | None) -> int:
        limit = getattr(self.decoder, "max_context", self.manifest.llm.max_context)  # engines may hold fewer
        n = len(prepared.input_ids)
        if n >= limit:
            raise PromptError(
                f"the prompt is {n} tokens ({prepared.num_image_tokens} of them image tokens) but the model's "
                f"context is {limit}; shorten the prompt or use fewer images"
            )
        wanted = self.manifest.generation.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        return min(wanted, limit - n)

    def _sampling_params(self, overrides: dict) -> SamplingParams:
        g = self.manifest.generation
        known = {"do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "seed"}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown generation argument(s) {sorted(unknown)}; valid: {sorted(known)}")
        params = dict(
            do_sample=g.do_sample, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p,
            repetition_penalty=g.repetition_penalty,
        )
        params.update({k: v for k, v in overrides.items() if v is not None})
        params = SamplingParams(**params)
        if self.manifest.llm.head == "screened" and (params.do_sample or params.repetition_penalty != 1.0):
            raise ValueError(
                "this export screens its LM head (manifest llm.head = 'screened'): only the argmax of its logits is "
                "exact, so it decodes greedily without a repetition penalty; pass do_sample=False and "
                "repetition_penalty=1.0 (leave out --sample), or re-export with --lm-head full to sample")
        return params

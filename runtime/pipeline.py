"""``Pipeline``: load an exported folder and generate. The step reads like the model:
images → tiles → vision → connector → merge into the prompt → prefill → decode."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from .backends import open_backend, open_graph
from .decode import PREFILL_CHUNK, decode_one_token, prefill
from .errors import PromptError, VlmforgeError
from .features import pack_image_features, pack_video_features
from .images import load_image
from .kv_cache import OrtDecoder
from ..kernels import PreprocessSpec, TileLayout, pack_geometry, packed_patches_per_call, vision_geometry
from ..kernels.frames import frame_batch
from ..kernels.native import native_video
from .budget import call_spec
from .manifest import Manifest, load_manifest
from .positions import Positions, plan_positions
from .preprocess import choose_preprocess
from .media import Media, as_list, frame_timestamps, in_prompt_order, video_time_step
from .packing import Miss, pack_groups, split_tokens
from .prompt import PreparedPrompt
from .prompting import Prompter
from .video import load_video, sample_frames
from .sampling import Sampler, SamplingParams, check_max_new_tokens
from .serving.request import Prepared, Request, make_request
from .serving.chat import Chat
from .serving.engine import Engine
from .serving.prefix_cache import PrefixCache
from .serving.sequence import GenerationResult, Sequence
from .vision_cache import DEFAULT_BUDGET_BYTES, VisionCache, media_key
from .stats import StageTimer
from .stream import TextStream, stop_list
from .token_inputs import plan_token_inputs
from .tile_prompt import expand_tiled_images, tile_runs
from .tokenizer import TextTokenizer
from .towers import open_towers
from .turns import DecoderTurns


class Pipeline:
    def __init__(self, root: Path, manifest: Manifest, backend: str = "auto", threads: int | None = None, verify: bool = True,
                 preprocess: str = "auto", max_image_pixels: int | None = None,
                 vision_cache_bytes: int = DEFAULT_BUDGET_BYTES):
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
        # several vision graphs feeding the connector (manifest.vision_towers), or None
        self.towers = open_towers(root, manifest, self.backend, threads, self.vision)
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
        self.vision_cache = VisionCache(vision_cache_bytes)  # embeddings by pixel hash, shared by all requests
        self.prefill_chunk = PREFILL_CHUNK  # long prompts prefill this many tokens per step (None: whole)
        self._engine = None  # the batched decoding engine (runtime/serving/), started by the first batched call

    def _newline_embedding(self) -> np.ndarray | None:
        """What ends each row of image tokens: a learned vector (LLaVA-NeXT) or a text token's embedding (Fuyu)."""
        image = self.manifest.image
        if image.newline_path:
            return np.load(self.root / image.newline_path)
        if image.newline_token_id is not None:
            return np.asarray(self.embed_table[image.newline_token_id], dtype=np.float32)
        return None

    @classmethod
    def load(cls, model_dir: str | Path, backend: str = "auto", verify: bool | str = True, threads=None, preprocess: str = "auto",
             max_image_pixels: int | None = None, vision_cache_bytes: int = DEFAULT_BUDGET_BYTES) -> "Pipeline":
        """``preprocess``: "auto" (the CUDA kernel when the backend is TensorRT, else the CPU kernel), "cpu" or "gpu".
        ``max_image_pixels``: larger pictures are refused from their header (default: the export's, 50 MP).
        ``vision_cache_bytes``: embeddings of recent images kept for reuse (0 keeps none).
        ``verify``: check every artifact's SHA-256 — those verified before and unchanged since are
        trusted (runtime/load_cache.py), "full" re-reads them all, False checks sizes only."""
        root = Path(model_dir)
        start = time.perf_counter()
        pipe = cls(root, load_manifest(root, verify=verify), backend, threads, verify, preprocess, max_image_pixels,
                   vision_cache_bytes)
        pipe.load_s = time.perf_counter() - start  # manifest, hash checks, sessions (profile's "load")
        return pipe

    # -- stages -----------------------------------------------------------------------------
    def encode_image(self, image, timer: StageTimer, prompt_text: str = "") -> np.ndarray:
        """One image (path / PIL / array) → its embeddings (num_image_tokens, hidden), always computed
        (the vision cache is bypassed: calibration records these graph calls).

        ``prompt_text`` feeds connectors that read the instruction too (``connector_text_inputs``)."""
        return self._encode(image, timer, prompt_text, cache=False).embeds

    def _encode(self, image, timer: StageTimer, prompt_text: str = "", spec: PreprocessSpec | None = None,
                cache: bool = True) -> Media:
        """→ its embeddings and the kernel's layout (its grid places the image's tokens for the position
        scheme). ``spec``: this call's preprocessing (a smaller image budget), default the export's."""
        spec = spec or self.manifest.image.preprocess
        rgb, key, hit = self._lookup(image, timer, prompt_text, spec, cache)
        if hit is not None:
            return hit
        with timer("preprocess", self.preprocess):
            pixels, layout = self.preprocess(rgb, spec)
        embeds, extras = self._embed_pixels(pixels, layout, spec, timer, prompt_text)
        return self._picture(embeds, extras, layout, rgb, key, spec, cache)

    def _encode_images(self, images: list, timer: StageTimer, prompt_text: str, spec: PreprocessSpec) -> list[Media]:
        """A request's pictures → Media each, the vision cache first; a native-resolution tower takes
        the misses together, as few calls as the export's patch bound allows (runtime/packing.py)."""
        limit = packed_patches_per_call(self.manifest.image.preprocess)
        if len(images) < 2 or not limit or self.vision is None or self.towers is not None:
            return [self._encode(image, timer, prompt_text, spec) for image in images]
        media, misses = [None] * len(images), []
        for i, image in enumerate(images):
            rgb, key, media[i] = self._lookup(image, timer, prompt_text, spec, True)
            if media[i] is None:
                with timer("preprocess", self.preprocess):
                    misses.append(Miss(i, rgb, key, *self.preprocess(rgb, spec)))
        for group in pack_groups([m.layout.num_tiles for m in misses], limit):
            parts = [misses[j] for j in group]
            geometry = pack_geometry([vision_geometry(m.layout, spec) for m in parts])
            embeds, extras = self._embed_pixels(np.concatenate([m.pixels for m in parts]), None, spec, timer,
                                                prompt_text, geometry)
            for m, (e, x) in zip(parts, split_tokens(embeds, extras, [m.layout.num_image_tokens for m in parts])):
                media[m.index] = self._picture(e, x, m.layout, m.rgb, m.key, spec, True)
        return media

    def _lookup(self, image, timer: StageTimer, prompt_text: str, spec: PreprocessSpec, cache: bool):
        """Decode ``image`` → (rgb, its vision-cache key, the cached Media or None)."""
        with timer("image_decode"):
            rgb = load_image(image, spec.max_input_pixels)
        return (rgb, *self._cached(rgb, (spec, self._connector_text(prompt_text)), timer, cache))

    def _picture(self, embeds, extras, layout: TileLayout, rgb, key: str, spec: PreprocessSpec, cache: bool) -> Media:
        embeds = pack_image_features(embeds, rgb.shape[:2], spec, self.image_newline, self.view_separator)
        assert embeds.shape[0] == layout.num_image_tokens, (embeds.shape, layout)
        return self._keep(Media(embeds, layout, extras=extras, key=key, size=rgb.shape[:2]), cache)

    def _connector_text(self, prompt_text: str) -> str:
        """What of the prompt the image's embeddings depend on: all of it for Q-Formers that read it."""
        return prompt_text if self.manifest.capabilities.connector_text_inputs else ""

    def _cached(self, pixels: np.ndarray, settings, timer: StageTimer, cache: bool):
        """(key, the cached Media or None); counts the hit or miss in the request's profile."""
        with timer("vision_cache"):
            key = media_key(pixels, settings)
            hit = self.vision_cache.get(key) if cache else None
        timer.counts["vision_cache_hit" if hit is not None else "vision_cache_miss"] += 1
        return key, hit

    def _keep(self, media: Media, cache: bool) -> Media:
        if cache:
            self.vision_cache.put(media.key, media)
        return media

    def _encode_video(self, video, timer: StageTimer, spec: PreprocessSpec, fps, sample_fps=None) -> Media:
        """A video (frames array, list of pictures, folder, file) taken at ``fps`` → its embeddings and
        token layout; with ``sample_fps`` its frames are first sampled down to that rate."""
        image = self.manifest.image
        frame_spec = image.video_preprocess  # each frame one tile (OneVision); None: native-resolution clips
        if image.video_token_id is None or (spec.scheme != "native" and frame_spec is None):
            raise PromptError(f"{self.manifest.family} takes no videos; pass pictures in images=[...]")
        clip_spec = frame_spec or spec  # how the frames are sampled and tiled
        if self.preprocess.device != "cpu":
            raise VlmforgeError("videos are preprocessed by the CPU kernel only for now; load with preprocess='cpu'")
        step = video_time_step(spec, self.manifest.llm.positions.tokens_per_second, sample_fps or fps)
        with timer("image_decode"):
            frames = load_video(video, spec.max_input_pixels)
            kept = np.arange(len(frames))
            if sample_fps is not None:
                kept = sample_frames(len(frames), fps, sample_fps, clip_spec.temporal_patch_size,
                                     rule=clip_spec.frame_sampling)
                frames = frames[kept]
        # the kept frames' indices too: they set the timestamps (Qwen3-VL) of frames with equal pixels
        key, hit = self._cached(frames, (clip_spec, "video", fps, sample_fps, [int(i) for i in kept]), timer, True)
        if hit is not None:
            return hit
        with timer("preprocess", self.preprocess):
            tiler = native_video if frame_spec is None else frame_batch
            pixels, layout = tiler(frames, clip_spec, self.preprocess.kernel)
        embeds, extras = self._embed_pixels(pixels, layout, clip_spec, timer, "")
        if frame_spec is not None:
            embeds = pack_video_features(embeds, frame_spec, self.image_newline)
        return self._keep(Media(embeds.reshape(-1, embeds.shape[-1]), layout, step, extras,
                                frame_timestamps(kept, fps, clip_spec.temporal_patch_size), key), True)

    def _embed_pixels(self, pixels, layout: TileLayout | None, spec: PreprocessSpec, timer: StageTimer, prompt_text: str,
                      geometry: dict | None = None):
        """Pixels → vision → connector: (image_embeds before any per-scheme packing, the connector's
        other outputs by name — Qwen3-VL's deepstack_embeds). ``geometry``: the vision graph's
        host-side inputs when given (several pictures packed), else ``vision_geometry(layout)``."""
        outputs = {"image_features": pixels}  # no vision graph: the patches are the features (Fuyu)
        if self.towers is not None:  # each tower on its own view of the pixels (runtime/towers.py)
            outputs = self.towers.run(pixels, spec, timer)
        elif self.vision is not None:
            # the geometry a native-resolution tower needs (rotary positions …) comes from the grid, on the host
            feeds = {"pixel_values": pixels, **(vision_geometry(layout, spec) if geometry is None else geometry)}
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

    # -- many requests at once (runtime/serving/) -------------------------------------------
    @property
    def engine(self) -> Engine:
        """The batched decoding engine, started with default settings on first use."""
        if self._engine is None:
            self.start_engine()
        return self._engine

    def start_engine(self, max_batch: int = 8, prefill_chunk: int = 256, max_waiting: int = 64,
                     prefix_cache_bytes: int = 128 << 20) -> Engine:
        """(Re)start the engine: ``max_batch`` requests decode together, longer prompts prefill
        ``prefill_chunk`` tokens per step, ``max_waiting`` more may queue, and finished prompts'
        caches are kept for prefix reuse within ``prefix_cache_bytes`` (0: none)."""
        if not isinstance(self.decoder, OrtDecoder):
            raise VlmforgeError(f"batched decoding runs on the onnxruntime backend; this pipeline's {self.backend} "
                                "decoder serves one request at a time (generate_batch runs them in turn)")
        window = self.manifest.llm.attention.bounded_window
        cache = PrefixCache(prefix_cache_bytes, window=window) if prefix_cache_bytes else None
        engine = Engine(self.decoder, self.embed_table, self.manifest, max_batch, prefill_chunk, max_waiting, cache)
        if self._engine is not None:  # requests still on the old one end with a clear error
            self._engine.close()
        self._engine = engine
        return engine

    def generate_batch(self, requests: list[Request]) -> list[GenerationResult]:
        """Several requests decoded together (one LLM step for all running ones); results in order,
        each with the tokens ``generate`` gives it alone. Each request is prepared (its images
        encoded) in this thread and starts decoding as soon as it is ready."""
        if not isinstance(self.decoder, OrtDecoder):  # TensorRT: one request at a time, same results
            return [self.generate(**r.kwargs()) for r in requests]
        seqs = []
        try:
            for r in requests:
                seqs.append(self.sequence(r))
                self.engine.submit(seqs[-1])
        except BaseException:  # a bad request: the ones already queued stop too
            for s in seqs:
                self.engine.cancel(s)
            raise
        for s in seqs:
            s.done.wait()
        for s in seqs:
            if s.error is not None:
                raise s.error
        return [s.result for s in seqs]

    def chat(self, system: str | None = None, **defaults) -> Chat:
        """A conversation that keeps its KV cache: each turn prefills only its new tokens."""
        return Chat(self, system, **defaults)

    def _generate(self, prompt=None, images=None, *, timer: StageTimer | None = None, done=lambda result: None,
                  **kwargs) -> Iterator[str]:
        """One request on the pipeline's own decoder (its turn held by ``DecoderTurns`` per step)."""
        seq = self.sequence(make_request(prompt, images, kwargs), timer)
        memory = seq.prepared.memory
        self.decoder.reset()
        if memory:
            self.decoder.set_memory(memory)
        p = seq.prepared
        logits = prefill(self.decoder, p.inputs_embeds, seq.timer, p.positions, p.feeds, self.prefill_chunk)
        while True:
            token = seq.choose(logits)
            piece = seq.accept(token)
            if piece:
                yield piece
            if seq.finished:
                break
            logits = decode_one_token(self.decoder, self.embed_table, token, seq.timer, p.positions, p.feeds)
        tail = seq.finish(self.decoder.cache.nbytes)
        if tail:
            yield tail
        done(seq.result)

    def sequence(self, request: Request, timer: StageTimer | None = None, on_piece=None) -> Sequence:
        """A request, checked and prepared (images encoded, prompt merged), as a ``Sequence`` ready for
        its first LLM step. Bad arguments are refused here, before any decoding."""
        start = time.perf_counter()
        sampler = Sampler(self._sampling_params(request.sampling()))
        stop = stop_list(request.stop)
        check_max_new_tokens(request.max_new_tokens)
        timer = StageTimer() if timer is None else timer
        prepared = self.prepare(request, timer)
        # ignore_eos: profiling decodes exactly max_new_tokens, like benchmark harnesses do
        eos = set() if request.ignore_eos else set(self.manifest.tokenizer.eos_token_ids)
        stops = self.manifest.generation.stop_strings if stop is None else stop
        return Sequence(prepared, sampler, eos, stops, self.tokenizer.stream(), timer, start, on_piece)

    def prepare(self, request: Request, timer: StageTimer) -> Prepared:
        """Encode the request's images and videos, build and merge its prompt, plan its positions and
        per-token inputs and (encoder-decoder, cross-attention) its memory. Touches no decoder state."""
        spec = call_spec(self.manifest.image.preprocess, request.max_pixels)  # this call's image budget
        images, videos = as_list(request.images), as_list(request.videos)
        text = self.prompt_text(request.prompt, request.messages, len(images), len(videos))
        pictures = self._encode_images(images, timer, text, spec.for_images(len(images)))
        clips = [self._encode_video(v, timer, spec, request.video_fps, request.sample_fps) for v in videos]
        if self.manifest.image.video_frame_template:  # every temporal patch its own run of slots (Qwen3-VL)
            text = self.prompter.expand_video_frames(text, [c.timestamps for c in clips])
            clips = [patch for c in clips for patch in c.temporal_patches()]
        sizes = [m.size for m in pictures]
        if self.manifest.image.tile_prompt:  # every tile its own run of slots amid its grid's text (Idefics3)
            image = self.manifest.image  # spans closed first: each is one placeholder (Gemma 3's boi)
            text = expand_tiled_images(self.prompter.close_spans(text), image.tile_prompt,
                                       image.placeholder or image.image_token, [m.layout.grid for m in pictures])
            pictures = [run for m in pictures for run in tile_runs(m)]
        prepared = self.prepare_prompt(text, None, len(images), [m.embeds.shape[0] for m in pictures],
                                       [m.embeds.shape[0] for m in clips])
        media = in_prompt_order(prepared, pictures, clips, self.manifest.image.image_token_id)
        embeds = [m.embeds for m in media]
        max_new = self._budget(prepared, request.max_new_tokens)
        with timer("merge"):
            inputs_embeds = self.merge(prepared, embeds)
        inputs_embeds, decoder_ids, memory = self.attach_memory(inputs_embeds, prepared, self.memory_rows(media), timer)
        positions = self.positions(len(decoder_ids), prepared, media)
        feeds = plan_token_inputs(self.manifest.llm, len(decoder_ids), prepared.image_slots, media, decoder_ids)
        return Prepared(prepared, decoder_ids, inputs_embeds, positions, feeds, max_new, memory,
                        [m.key for m in media], sizes, self.manifest.image.grounding)

    def positions(self, seq_len: int, prepared: PreparedPrompt, media: list[Media]) -> Positions:
        """The prefill's position_ids and where decoding continues, by the manifest's scheme."""
        spec = self.manifest.llm.positions
        m = spec.spatial_merge_size
        grids = [(x.layout.frames, x.layout.grid[0] // m, x.layout.grid[1] // m) for x in media]
        slots = prepared.image_slots if seq_len == len(prepared.input_ids) else []  # encoder-decoder: start token only
        return plan_positions(spec, seq_len, slots, grids, [x.time_step for x in media])

    def memory_rows(self, media: list[Media]) -> list[np.ndarray]:
        """Each picture's cross-attention memory rows (rows, d): its embeddings, or the connector output
        the manifest names (``capabilities.cross_memory``)."""
        name = self.manifest.capabilities.cross_memory
        if not name:
            return [m.embeds for m in media]
        return [m.extras[name].reshape(-1, m.extras[name].shape[-1]) for m in media]

    def attach_memory(self, inputs_embeds: np.ndarray, prepared: PreparedPrompt, image_embeds, timer: StageTimer):
        """For encoder-decoder models encode the prompt once and start the decoder from
        ``decoder_start_token_id``; for cross-attention ones compute the memory's K/V.

        Returns (decoder inputs_embeds (1, s, d), decoder prompt ids, the decoder's fixed inputs or None)."""
        caps = self.manifest.capabilities
        if caps.encoder_decoder:
            mask = np.ones(inputs_embeds.shape[:2], dtype=np.int64)
            with timer("encoder"):
                feeds = {"inputs_embeds": inputs_embeds, "attention_mask": mask}
                memory = self.encoder.run(feeds)["encoder_hidden_states"]
            start = np.array([self.manifest.generation.decoder_start_token_id], dtype=np.int64)
            start_embeds = np.asarray(self.embed_table[start], dtype=np.float32)[None]
            return start_embeds, start, self.cross_memory(memory, timer)
        if caps.cross_attention:  # the image embeddings themselves are the memory (BLIP)
            if not image_embeds and caps.cross_attention_optional:  # text alone: one zero row (see Capabilities)
                image_embeds = [np.zeros((1, self.manifest.llm.hidden_size), dtype=np.float32)]
            if not image_embeds:
                raise PromptError(f"{self.manifest.family} reads every token against a picture (cross-attention): "
                                  "pass a picture (images=[...], or --image on the command line)")
            return inputs_embeds, prepared.input_ids, self.cross_memory(np.concatenate(image_embeds)[None], timer)
        return inputs_embeds, prepared.input_ids, None

    def cross_memory(self, memory: np.ndarray, timer: StageTimer) -> dict[str, np.ndarray]:
        """memory (1, m, d) → every decoder layer's cross K/V and the memory mask, computed once per
        generation and bound to each of its steps."""
        with timer("cross_kv"):
            cross = self.cross_kv.run({"encoder_hidden_states": np.ascontiguousarray(memory, dtype=np.float32)})
        return {**cross, "encoder_attention_mask": np.ones(memory.shape[:2], dtype=np.int64)}

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

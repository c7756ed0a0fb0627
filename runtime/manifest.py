"""``manifest.json``: the contract between export and runtime.

Export writes it; the runtime reads only it (never file or model names). Everything is plain
JSON → dataclasses through ``schema.parse`` (every field type-checked; unknown keys ignored, so
older runtimes can read newer manifests of the same major version), validated in
``__post_init__``; every path it names must stay inside the folder and be a hashed artifact.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..kernels.spec import PreprocessSpec, from_dict
from .engines import EnginesSpec
from .errors import ManifestError
from .schema import check_inside, parse

FORMAT = "vlmforge-manifest"
VERSION = 1
LM_HEADS = ("full", "screened")  # LLMSpec.head
MANIFEST_NAME = "manifest.json"
PLACEMENTS = ("inline", "prefix", "memory")
POSITION_SCHEMES = ("consecutive", "mrope", "shared_span")  # runtime/positions/
ATTENTION_PATTERNS = ("causal", "prefix", "image")  # runtime/attention.py
TOKEN_INPUT_KINDS = ("deepstack", "ntk_alpha", "image_mask", "cross_mask")  # runtime/token_inputs.py
CACHE_LAYOUTS = ("concat", "append")  # runtime/kv_cache.py
KV_DTYPES = ("float32", "float16", "int8")  # int8: with per-(token, head) scales (calibration/kv_int8.py)


@dataclass
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: float32, float16, int64 …
    shape: list[int | str]  # ints and symbolic names ("batch", "past_sequence + sequence")


@dataclass
class GraphSpec:
    """One ONNX graph (or engine) and its I/O."""

    path: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    precision: str = "fp32"
    # how the graph was quantised (written by vlmforge.calibration; None for an exported float graph):
    # method, weight_form ("matmulnbits" | "dequantizelinear"), bits, nodes kept in float and why …
    quantization: dict | None = None

    def __post_init__(self):
        self.inputs = [t if isinstance(t, TensorSpec) else from_dict(TensorSpec, t) for t in self.inputs]
        self.outputs = [t if isinstance(t, TensorSpec) else from_dict(TensorSpec, t) for t in self.outputs]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


@dataclass
class Capabilities:
    """What the decode loop must do differently; asked, never inferred from the family name."""

    uses_mrope: bool = False
    image_newline: bool = False
    cross_attention: bool = False
    token_type_experts: bool = False
    encoder_decoder: bool = False  # an "encoder" graph reads the prompt; the decoder starts from decoder_start_token_id
    connector_text_inputs: bool = False  # the connector also reads the prompt (InstructBLIP's Q-Former)
    # cross-attention decoders that also answer text alone (Mllama): a prompt without pictures gets one
    # zero memory row, whose zero values make every cross layer add nothing
    cross_attention_optional: bool = False
    # the connector output that is the cross-attention memory (CogAgent: its high-resolution tower's
    # features, beside the prompt's image tokens); "": the image embeddings themselves (BLIP, Mllama)
    cross_memory: str = ""


@dataclass
class PositionSpec:
    """How the LLM graph's position_ids are built (runtime/positions/).

    consecutive: (1, seq) 0, 1, 2 …; mrope (Qwen2-VL): (3, 1, seq) temporal / row / column rows —
    text advances all three together, an image's tokens take their (t, row, column) in its token
    grid (the patch grid over ``spatial_merge_size``) from where the text stood, and the text
    after it resumes past the image's largest position; shared_span (CogVLM): (1, seq) — each image
    run's first and last tokens take their own positions and its interior tokens share one."""

    scheme: str = "consecutive"
    spatial_merge_size: int = 1
    # mrope: a video's temporal positions step by tokens_per_second · seconds per temporal patch
    # (Qwen2.5-VL); 0: by 1 per temporal patch (Qwen2-VL)
    tokens_per_second: float = 0.0
    offset: int = 0  # consecutive: the first token's position (PaliGemma counts from 1)

    def __post_init__(self):
        if self.scheme not in POSITION_SCHEMES:
            raise ManifestError(f"unknown position scheme {self.scheme!r}; this runtime knows {POSITION_SCHEMES}")


@dataclass
class AttentionSpec:
    """Which tokens attend to which (runtime/attention.py builds it; export/attention.py is the graph's
    side). causal: each token sees those before it. prefix (PaliGemma's prefix-LM): the whole
    prompt — images, BOS, text — sees itself bidirectionally, generated tokens are causal. image
    (Gemma 3): each image's tokens see each other bidirectionally. Non-causal patterns are fed as
    ``input`` (batch, seq) span ids, and a span is never split across prefill steps."""

    pattern: str = "causal"
    input: str = "token_spans"
    # sliding-window layers whose cache is bounded (Gemma 3): layer i in ``window_layers`` sees the
    # last ``window`` positions only, and its present.* keeps only the last ``window_cache`` tokens
    # (the graph drops the rest): window − 1 that the next step needs, plus a slack that lets a
    # chat's next turn reuse a prefix a few tokens shorter than the cache (runtime/serving/prefix_cache.py)
    window: int = 0
    window_layers: list[int] = field(default_factory=list)
    window_cache: int = 0

    def __post_init__(self):
        if self.pattern not in ATTENTION_PATTERNS:
            raise ManifestError(f"unknown attention pattern {self.pattern!r}; this runtime knows {ATTENTION_PATTERNS}")
        if self.window_layers and not (self.window >= 2 and self.window_cache >= self.window - 1):
            raise ManifestError(f"manifest.llm.attention.window_layers needs a window >= 2 and window_cache >= "
                                f"window - 1; got window {self.window}, window_cache {self.window_cache}")

    @property
    def bounded_window(self) -> int:
        """The window of the bounded layers (0: every layer keeps all its tokens)."""
        return self.window if self.window_layers else 0


@dataclass
class TokenInput:
    """A per-token input of the LLM graph beside inputs_embeds, built by runtime/token_inputs.py.

    deepstack (Qwen3-VL): ``name`` (layers, batch, seq, hidden) float — the connector output of
    that name (layers, tokens, hidden) of each image at its tokens' positions, zero at text tokens;
    the graph adds layer i's to the hidden states after decoder layer i.

    ntk_alpha (Qwen-VL's dynamic NTK RoPE): ``name`` (batch,) float — one value per sequence, the
    same at every step: 2^⌈log2(prompt tokens / seq_length) + 1⌉ − 1, at least 1; the graph scales
    its rotary base by α^(d/(d-2)). A cache built under one α is reused only under the same α.

    image_mask (InternLM-XComposer2's Partial LoRA): ``name`` (batch, seq) float — 1 at image slots,
    0 at text tokens and at every decode step; the graph adds its LoRA branches only where it is 1.
    ``skip_last`` of each image's slots are 0 too (CogVLM's expert mask: its end-of-image token takes
    the language expert).

    cross_mask (Mllama, runtime/cross_mask.py): ``name`` (batch, seq, memory) float — 1 where a token
    sees a memory row: each picture's ``tokens_per_tile`` rows per real tile, seen from its
    ``token_id`` token until the next one that does not directly follow it (transformers'
    ``get_cross_attention_token_mask``); decode steps repeat the prompt's last row."""

    name: str
    kind: str
    layers: int = 0
    seq_length: int = 0  # ntk_alpha: the trained context length the prompt is measured against
    token_id: int = -1  # cross_mask: the token that stands for each picture in the prompt
    tokens_per_tile: int = 0  # cross_mask: memory rows per tile
    skip_last: int = 0  # image_mask: each image's last slots left at 0

    def __post_init__(self):
        if self.kind not in TOKEN_INPUT_KINDS:
            raise ManifestError(f"unknown LLM token input kind {self.kind!r}; this runtime knows {TOKEN_INPUT_KINDS}")


@dataclass
class LLMSpec:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_context: int
    # the cache tensors' dtype; "int8" (quantize --kv-cache int8, calibration/kv_int8.py): each
    # past/new input has a float32 ``…_scale`` companion (b, kv_heads, tokens, 1), one per token and head
    kv_dtype: str = "float32"
    # "full": the graph's logits are the FP32 head's; "screened" (export --lm-head screened): only
    # argmax(logits) is exact — greedy decoding only (export/screened_head.py)
    head: str = "full"
    positions: PositionSpec = field(default_factory=PositionSpec)
    token_inputs: list[TokenInput] = field(default_factory=list)
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    # concat: the graph's present.{i}.* are past + new (a fresh cache per step); append
    # (export/append_cache.py): its new.{i}.* are the new tokens' only, written by the runtime into
    # a cache it preallocates (runtime/kv_cache.py) — the cache stays where it is
    cache_layout: str = "concat"

    def __post_init__(self):
        if self.cache_layout not in CACHE_LAYOUTS:
            raise ManifestError(f"unknown manifest.llm.cache_layout {self.cache_layout!r}; this runtime knows "
                                f"{CACHE_LAYOUTS}")
        if isinstance(self.positions, dict):
            self.positions = parse(PositionSpec, self.positions, "manifest.llm.positions")
        if isinstance(self.attention, dict):
            self.attention = parse(AttentionSpec, self.attention, "manifest.llm.attention")
        self.token_inputs = [t if isinstance(t, TokenInput) else parse(TokenInput, t, "manifest.llm.token_inputs")
                             for t in self.token_inputs]
        if self.kv_dtype not in KV_DTYPES:
            raise ManifestError(f"unknown manifest.llm.kv_dtype {self.kv_dtype!r}; this runtime knows {KV_DTYPES}")
        if self.kv_scaled and self.cache_layout != "append":
            raise ManifestError("manifest.llm.kv_dtype 'int8' needs cache_layout 'append' (the int8 cache is written "
                                "in place); re-quantise an append-layout export with --kv-cache int8")
        if self.cache_layout == "append" and self.attention.window:
            raise ManifestError("manifest.llm.cache_layout 'append' cannot go with a sliding window (its window counts "
                                "cache columns, and the append cache leaves free ones); re-export the model")

    @property
    def step_inputs(self) -> list[str]:
        """The llm graph's inputs fed at every step besides embeddings, mask, positions and cache."""
        spans = [self.attention.input] if self.attention.pattern != "causal" else []
        return [t.name for t in self.token_inputs] + spans

    @property
    def kv_scaled(self) -> bool:
        """int8 keys/values, each (token, head) vector with its own float32 scale beside it."""
        return self.kv_dtype == "int8"

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes one token adds to the KV cache: a key and a value per layer (while no window is full);
        int8: head_dim bytes + a 4-byte scale per head."""
        import numpy as np

        per_head = self.head_dim * np.dtype(self.kv_dtype).itemsize + (4 if self.kv_scaled else 0)
        return 2 * self.num_layers * self.num_kv_heads * per_head

    @property
    def cache_caps(self) -> list[int | None]:
        """Per past input (layer i's key, value, …): the most tokens it keeps, None for all of them."""
        bounded, cap = set(self.attention.window_layers), self.attention.window_cache
        return [cap if i in bounded else None for i in range(self.num_layers) for _ in ("key", "value")]

    def cache_bytes(self, num_tokens: int) -> int:
        """Exact KV cache bytes after ``num_tokens`` tokens (bounded layers stop growing at their cap)."""
        per_input = self.kv_bytes_per_token // (2 * self.num_layers)
        return per_input * sum(num_tokens if c is None else min(num_tokens, c) for c in self.cache_caps)


@dataclass
class TokenizerSpec:
    path: str
    bos_token_id: int | None
    eos_token_ids: list[int]
    pad_token_id: int | None
    chat_template: str | None = None
    special_tokens: dict = field(default_factory=dict)  # name → token string
    add_special_tokens: bool = True  # let the tokenizer add its BOS/CLS … (its post-processor)
    prefix_ids: list[int] = field(default_factory=list)  # ids put before every tokenised prompt (BLIP's [DEC])


@dataclass
class GroundingSpec:
    """Boxes in the answer text, read into ``result.boxes`` by runtime/grounding.py: coordinates run
    0 … ``scale`` over the picture. ``format`` "marks" (Qwen-VL): ``<ref>a cat</ref><box>(x1,y1),(x2,y2)</box>``;
    "brackets" (CogVLM / CogAgent): ``a cat [[x1,y1,x2,y2]]`` (several boxes ``[[x1,y1,x2,y2;x1,y1,x2,y2]]``), labelled by
    the words before them."""

    ref: list[str] = field(default_factory=lambda: ["<ref>", "</ref>"])
    box: list[str] = field(default_factory=lambda: ["<box>", "</box>"])
    scale: int = 1000
    format: str = "marks"

    def __post_init__(self):
        if self.format not in ("marks", "brackets"):
            raise ManifestError(f"grounding format {self.format!r} is not 'marks' or 'brackets'")
        if len(self.ref) != 2 or len(self.box) != 2 or self.scale <= 0:
            raise ManifestError(f"grounding needs ref and box as [open, close] marks and a positive scale; got {self}")


@dataclass
class TilePromptSpec:
    """What a tiled picture becomes in the prompt text, built from its tile grid by
    runtime/tile_prompt.py (Idefics3 / SmolVLM: ``<fake_token_around_image><row_1_col_1><image>…``).

    Each piece holds ``{image}`` once: one run of the tile's slots (``tokens_per_tile`` image
    tokens). ``tile`` is written for every local tile, row-major, with ``{row}`` / ``{col}`` counted
    from 1, ``row_end`` after each row of them, then ``global_view``; a picture with no local tiles
    (grid (0, 0)) is ``single`` alone. ``global_first``: the global view, then the tiles (Gemma 3's
    pan-and-scan: "Here is the original image {image} and here are some crops …" then the crops)."""

    tile: str
    row_end: str
    global_view: str
    single: str
    separator: str = ""  # between consecutive local tiles, across rows (Gemma 3's pan-and-scan crops: " ")
    global_first: bool = False  # the global view's run (tile 0 of the pixels) before the local tiles

    def __post_init__(self):
        for name in ("tile", "global_view", "single"):
            if getattr(self, name).count("{image}") != 1:
                raise ManifestError(f"image.tile_prompt.{name} must hold {{image}} exactly once, got "
                                    f"{getattr(self, name)!r}")
        if "{image}" in self.row_end:
            raise ManifestError(f"image.tile_prompt.row_end may not hold {{image}}, got {self.row_end!r}")


@dataclass
class ImageSpec:
    """How images become embeddings in the prompt."""

    image_token: str  # the placeholder users write ("<image>")
    image_token_id: int  # the id every image slot carries in input_ids
    preprocess: PreprocessSpec
    newline_path: str | None = None  # (hidden,) .npy appended after every row of image tokens
    separator_path: str | None = None  # hd: (hidden,) .npy between the global view and the local grid
    # "inline": the prompt holds one placeholder per image; "prefix": image slots go first,
    # before BOS, and the prompt holds none (BLIP-2's layout); "memory": no slots, the image
    # embeddings are the decoder's cross-attention memory (BLIP)
    placement: str = "inline"
    # the text users write where an image goes, when it is not the token itself (MiniGPT-4's "<ImageHere>")
    placeholder: str | None = None
    # Fuyu: the text token whose embedding ends every row of image patches
    newline_token_id: int | None = None
    # the tokenizer of the connector's text inputs (qformer_input_ids), when it has them
    connector_tokenizer: TokenizerSpec | None = None
    # native-resolution models with video: the placeholder of a video and the id its slots carry
    video_token: str | None = None
    video_token_id: int | None = None
    # what each temporal patch of a video becomes in the prompt, when the model gives every one its
    # own run of slots (Qwen3-VL: "<{seconds} seconds><|vision_start|>{video}<|vision_end|>"):
    # {seconds} its timestamp to one decimal, {video} the video token (expanded to the patch's tokens)
    video_frame_template: str | None = None
    # [open, close]: an image's slots sit between these marks, and text users write between them
    # (Qwen-VL's file path or URL) is dropped unread — "<img>photo.jpg</img>" is the next image given
    span: list[str] | None = None
    grounding: GroundingSpec | None = None  # boxes in the answer (result.boxes)
    # models whose tower sees each video frame as one tile (LLaVA-OneVision): the per-frame
    # preprocessing (kernels/frames.py), its feature pooling and the newline after the video; None:
    # videos are native-resolution clips (the image spec's "native" scheme) or not taken
    video_preprocess: PreprocessSpec | None = None
    # pictures cut into tiles whose slot runs the prompt separates with text (row marks, a global
    # view tag): the text around each tile's run, from the tile grid; None: one run per picture
    tile_prompt: TilePromptSpec | None = None
    # the most pictures one prompt (a whole chat) may hold; 0: any number (CogVLM was trained on one)
    max_images: int = 0

    def __post_init__(self):
        if self.span is not None and (len(self.span) != 2 or not all(self.span)):
            raise ManifestError(f"manifest.image.span must be [open mark, close mark], got {self.span}")
        if isinstance(self.preprocess, dict):
            self.preprocess = from_dict(PreprocessSpec, self.preprocess)
        if isinstance(self.video_preprocess, dict):
            self.video_preprocess = from_dict(PreprocessSpec, self.video_preprocess)
        if isinstance(self.connector_tokenizer, dict):
            self.connector_tokenizer = from_dict(TokenizerSpec, self.connector_tokenizer)
        if isinstance(self.tile_prompt, dict):
            self.tile_prompt = from_dict(TilePromptSpec, self.tile_prompt)
        if self.placement not in PLACEMENTS:
            raise ManifestError(f"unknown image placement {self.placement!r}; expected one of {PLACEMENTS}")


@dataclass
class VisionTowerSpec:
    """One of several vision graphs that feed one connector (runtime/towers.py; Mini-Gemini: a
    low-resolution ViT and a high-resolution ConvNeXt): ``graph`` reads the kernel's pixel view
    named ``pixels`` (kernels.pixel_views) and its output ``output`` is the connector input of that name."""

    graph: str
    pixels: str
    output: str


@dataclass
class GenerationDefaults:
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    decoder_start_token_id: int | None = None  # encoder-decoder models only
    stop_strings: list[str] = field(default_factory=list)  # used when generate() is given no stop=


@dataclass
class Artifact:
    sha256: str
    bytes: int


@dataclass
class Manifest:
    family: str
    architecture: str
    graphs: dict[str, GraphSpec]
    embeddings: TensorSpec  # name = file path, gathered row by row with NumPy
    tokenizer: TokenizerSpec
    image: ImageSpec
    llm: LLMSpec
    capabilities: Capabilities = field(default_factory=Capabilities)
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    source_config: dict = field(default_factory=dict)
    prompt_suffix: str = ""  # appended to every prompt before tokenising (Fuyu's "<0x04>")
    format: str = FORMAT
    version: int = VERSION
    vlmforge_version: str = ""
    engines: EnginesSpec | None = None  # TensorRT plans, written by `vlmforge build`
    # several vision graphs feeding one connector, each on its own pixels (runtime/towers.py); empty:
    # the one "vision" graph reads pixel_values
    vision_towers: list[VisionTowerSpec] = field(default_factory=list)

    def __post_init__(self):
        if self.format != FORMAT:
            raise ManifestError(f"not a vlmforge manifest (format={self.format!r})")
        if self.version != VERSION:
            raise ManifestError(
                f"manifest version {self.version} is not supported by this runtime (reads version {VERSION}); "
                "re-export the model with this vlmforge version"
            )
        self.graphs = {k: _as(GraphSpec, v) for k, v in self.graphs.items()}
        # vision is absent where patches go straight in (Fuyu), the connector where the decoder
        # reads the image through cross-attention (BLIP)
        if "llm" not in self.graphs or not ({"vision", "connector"} & set(self.graphs)):
            raise ManifestError(f"manifest needs an 'llm' graph and a 'vision' or 'connector' graph, has "
                                f"{sorted(self.graphs)}; re-export the model")
        self.embeddings = _as(TensorSpec, self.embeddings)
        self.tokenizer = _as(TokenizerSpec, self.tokenizer)
        self.image = _as(ImageSpec, self.image)
        self.llm = _as(LLMSpec, self.llm)
        if self.llm.head not in LM_HEADS:
            raise ManifestError(f"llm.head {self.llm.head!r} is not one of {', '.join(LM_HEADS)}; re-export the model")
        self.capabilities = _as(Capabilities, self.capabilities)
        self.generation = _as(GenerationDefaults, self.generation)
        self.artifacts = {k: _as(Artifact, v) for k, v in self.artifacts.items()}
        if self.engines is not None:
            self.engines = _as(EnginesSpec, self.engines)
        self.vision_towers = [_as(VisionTowerSpec, t) for t in self.vision_towers]
        for tower in self.vision_towers:
            if tower.graph not in self.graphs or "connector" not in self.graphs:
                raise ManifestError(f"manifest.vision_towers names graph {tower.graph!r}, but the graphs are "
                                    f"{sorted(self.graphs)} (a connector among them needed); re-export the model")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)


def _as(cls, value):
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ManifestError(f"manifest field for {cls.__name__} must be an object, got {type(value).__name__}")
    try:
        return from_dict(cls, value)
    except TypeError as e:  # a missing required key
        raise ManifestError(f"invalid {cls.__name__} in manifest: {e}") from None


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_manifest(model_dir: str | Path, verify: bool | str = True) -> Manifest:
    """Read and validate ``model_dir/manifest.json``; with ``verify`` check every artifact's SHA-256
    (those verified before and unchanged since are trusted; "full" re-reads them all)."""
    root = Path(model_dir)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {root}; point at a folder written by 'vlmforge export MODEL_DIR -o OUT'"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not valid JSON ({e}); re-export the model") from None
    manifest = parse(Manifest, data, "manifest")
    check_paths(root, manifest)
    check_artifacts(root, manifest, verify_hashes=verify)
    return manifest


def named_paths(manifest: Manifest) -> dict[str, str]:
    """Every file the runtime opens, by the manifest field that names it."""
    paths = {f"graphs.{name}.path": g.path for name, g in manifest.graphs.items()}
    paths["embeddings.name"] = manifest.embeddings.name
    paths["tokenizer.path"] = manifest.tokenizer.path
    image = manifest.image
    optional = {"image.newline_path": image.newline_path, "image.separator_path": image.separator_path,
                "image.connector_tokenizer.path": image.connector_tokenizer.path if image.connector_tokenizer else None}
    paths.update({k: v for k, v in optional.items() if v is not None})
    return paths


def check_paths(root: Path, manifest: Manifest) -> None:
    """No path in the manifest leaves the folder (absolute, '..', a symlink out), and every file the
    runtime opens is a hashed artifact (engines carry their own hashes in the engines section)."""
    for rel in manifest.artifacts:
        check_inside(root, rel, f"manifest.artifacts[{rel!r}]")
    for where, rel in named_paths(manifest).items():
        check_inside(root, rel, f"manifest.{where}")
        if rel not in manifest.artifacts:
            raise ManifestError(f"manifest.{where} = {rel!r} is not one of the hashed artifacts; re-export the model")
    for name, engine in (manifest.engines.graphs.items() if manifest.engines else ()):
        check_inside(root, engine.path, f"manifest.engines.graphs.{name}.path")


def check_artifacts(root: Path, manifest: Manifest, verify_hashes: bool | str) -> None:
    """Every artifact must exist with its recorded size (always) and hash (when asked). A file
    verified before and unchanged since (size, mtime, inode: runtime/load_cache.py) is not read
    again unless ``verify_hashes`` is "full"."""
    from . import load_cache

    # hashes verified before are trusted under verify=True; "full" re-reads everything
    fresh, records = {}, load_cache.verified_records() if verify_hashes is True else {}
    for rel, art in manifest.artifacts.items():
        f = root / rel
        if not f.is_file():
            raise ManifestError(f"artifact {rel} listed in the manifest is missing from {root}; re-export the model")
        size = f.stat().st_size
        if size != art.bytes:
            raise ManifestError(
                f"artifact {rel} is {size} bytes but the manifest records {art.bytes}; "
                "the folder was modified or truncated — re-export the model"
            )
        if not verify_hashes:
            continue
        digest = load_cache.known_hash(f, records)
        if digest is None:
            digest = fresh[f] = sha256_file(f)
        if digest != art.sha256:
            raise ManifestError(
                f"artifact {rel} does not match its SHA-256 in the manifest; "
                "the file was modified or corrupted — re-export the model"
            )
    load_cache.remember_hashes(fresh, records)  # all verified: a mismatch raised above

"""Tiny random diffusion pipelines, built offline, for tests and demos.

The weights are random, so the pictures are noise, but every component is a real diffusers
class wired exactly as in Stable Diffusion 1.x (``kind="sd"``), SDXL (``"sdxl"``), SD3
(``"sd3"``: three text encoders, a 16-channel VAE with a shift), Flux (``"flux"`` with
guidance embeddings, ``"flux-schnell"`` without), Chroma (``"chroma"``), Lumina 2
(``"lumina2"``), Z-Image (``"zimage"``), Qwen-Image (``"qwen-image"``), HiDream (``"hidream"``),
Flux.2 klein (``"flux2"``) or Flux.2 dev (``"flux2-dev"``): the sampler runs the same code path
as it does on a full-size model, in milliseconds.

Nothing is downloaded: the CLIP tokenizer's vocabulary (one token per byte, with and without the
end-of-word marker, and no merges) is written to a temporary folder and loaded from there. The
T5, Gemma 2, Qwen3, Qwen2.5-VL, Llama and Mistral 3 text encoders are tiny configurations of their
architectures over the same byte vocabulary (with a chat template where the pipeline asks for
one).

Example:
    >>> from seqwidgets.testing import tiny_pipeline
    >>> pipe = tiny_pipeline()
    >>> pipe.unet.config.sample_size * pipe.vae_scale_factor
    64
"""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

# SD 1.5's noise schedule: our samplers read these betas, so tiny runs use real sigmas.
SD15_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 1,
}

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> list[str]:
    """CLIP's printable stand-in for each of the 256 byte values (as in the GPT-2 tokenizer)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


@lru_cache(maxsize=1)
def tokenizer_folder() -> Path:
    """Write a byte-level CLIP vocabulary with no merges to a temporary folder, once."""
    folder = Path(tempfile.mkdtemp(prefix="seqwidgets-tokenizer-"))
    symbols = _bytes_to_unicode()
    vocab = {_BOS: 0, _EOS: 1}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    for symbol in symbols:
        vocab[symbol + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def tiny_tokenizer(max_length: int = 77):
    """A CLIPTokenizer over the offline byte vocabulary, padded with the end token as SD does."""
    from transformers import CLIPTokenizer

    # from_pretrained reads vocab.json + merges.txt the same way across transformers 4 and 5.
    return CLIPTokenizer.from_pretrained(
        str(tokenizer_folder()),
        local_files_only=True,
        model_max_length=max_length,
        bos_token=_BOS,
        eos_token=_EOS,
        pad_token=_EOS,
        unk_token=_EOS,
    )


def _text_config(
    hidden_size: int,
    projection_dim: int | None = None,
    *,
    layers: int = 2,
    heads: int = 4,
    positions: int = 77,
):
    """A CLIP text encoder config over the offline byte vocabulary (4x wide feed-forward for
    SD 1.5's sizes, 2x for the tiny ones)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=2 + 2 * 256,
        hidden_size=hidden_size,
        intermediate_size=(4 if layers > 2 else 2) * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=positions,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=projection_dim or hidden_size,
        hidden_act="quick_gelu",
    )


def _vae(
    block_out_channels: tuple[int, ...],
    layers_per_block: int,
    norm_num_groups: int,
    size: int,
    *,
    latent_channels: int = 4,
    scaling_factor: float = 0.18215,
    shift_factor: float | None = None,
):
    """An AutoencoderKL with SD's four blocks: three downsamples, so 8x (64x64 -> 4x8x8).

    SD3 and Flux VAEs have 16 latent channels, a shift, and no quant convolutions."""
    from diffusers import AutoencoderKL

    quant = shift_factor is None
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=size,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=quant,
        use_post_quant_conv=quant,
    ).eval()


def _sd_pipeline(vae, text_encoder, unet):
    """A StableDiffusionPipeline around these parts, the offline tokenizer and SD 1.5's schedule."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SD15_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


#: The kinds `tiny_pipeline` builds.
TINY_KINDS = (
    "sd",
    "sdxl",
    "sd3",
    "flux",
    "flux-schnell",
    "chroma",
    "lumina2",
    "zimage",
    "qwen-image",
    "hidream",
    "flux2",
    "flux2-dev",
)


def count_vae_decodes(pipe) -> list[int]:
    """Count the calls of ``pipe``'s VAE decoder (every path from a latent to pixels goes through
    it): returns a list that grows by each call's batch size, for tests and benchmarks.

    Example:
        >>> pipe = tiny_pipeline()
        >>> decodes = count_vae_decodes(pipe)
        >>> _ = pipe.vae.decode(torch.zeros(2, 4, 8, 8))
        >>> decodes
        [2]
    """
    calls, decode = [], pipe.vae.decode

    def counted(*args, **kwargs):
        calls.append(args[0].shape[0])
        return decode(*args, **kwargs)

    pipe.vae.decode = counted
    return calls


def tiny_pipeline(kind: str = "sd", seed: int = 0):
    """Build a random tiny pipeline of one model family offline.

    Args:
        kind (`str`, defaults to ``"sd"``): ``"sd"`` for SD 1.x/2.x wiring (one CLIP text encoder),
            ``"sdxl"`` for SDXL wiring (two text encoders, pooled embeddings, time ids),
            ``"sd3"`` for a ``StableDiffusion3Pipeline`` (two CLIPs and a T5, 16 channels),
            ``"flux"`` / ``"flux-schnell"`` for a ``FluxPipeline`` with / without guidance
            embeddings (CLIP pooled + T5, packed 2x2 latents). See `tiny_flow_pipeline`.
            ``"chroma"``, ``"lumina2"``, ``"zimage"``, ``"qwen-image"``, ``"hidream"``,
            ``"flux2"`` (klein), ``"flux2-dev"``: the 2026 families (`FAMILY_BUILDERS`).
        seed (`int`, defaults to 0): seeds the random weights; the same seed gives the same
            pipeline, bit for bit.

    Returns:
        A pipeline on the CPU in float32, default image size 64x64 (latents 4x8x8, 16x8x8 for
        the transformer families, 32x8x8 for Flux.2).

    Example:
        >>> pipe = tiny_pipeline("sdxl", seed=1)
        >>> type(pipe).__name__
        'StableDiffusionXLPipeline'
    """
    from ._loading import quiet_loading

    with quiet_loading():  # (importing the pipelines logs notices about optional packages)
        from diffusers import (
            EulerDiscreteScheduler,
            StableDiffusionXLPipeline,
            UNet2DConditionModel,
        )
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if kind not in TINY_KINDS:
        raise ValueError(
            f"tiny_pipeline: kind must be one of {', '.join(TINY_KINDS)}, got {kind!r}"
        )
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"tiny_pipeline: seed must be a non-negative int, got {seed!r}")
    if kind in FAMILY_BUILDERS:
        torch.manual_seed(seed)
        return FAMILY_BUILDERS[kind]()
    if kind not in ("sd", "sdxl"):
        return tiny_flow_pipeline(kind, seed)

    torch.manual_seed(seed)
    vae = _vae((8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, size=64)
    unet_common = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    if kind == "sd":
        text_encoder = CLIPTextModel(_text_config(32)).eval()
        unet = UNet2DConditionModel(cross_attention_dim=32, attention_head_dim=4, **unet_common)
        return _sd_pipeline(vae, text_encoder, unet.eval())

    text_encoder = CLIPTextModel(_text_config(32)).eval()
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(32, projection_dim=32)).eval()
    time_embed_dim = 8
    unet = UNet2DConditionModel(
        cross_attention_dim=64,  # both encoders' hidden states, concatenated
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + 32,
        **unet_common,
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tiny_tokenizer(),
        tokenizer_2=tiny_tokenizer(),
        unet=unet.eval(),
        scheduler=EulerDiscreteScheduler(**SD15_SCHEDULER_CONFIG),
        force_zeros_for_empty_prompt=False,
    )


def _tiny_t5(d_model: int):
    """A one-layer T5 encoder over the offline byte vocabulary (SD3's and Flux's third encoder)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=2 + 2 * 256,
        d_model=d_model,
        d_ff=d_model,
        d_kv=8,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        pad_token_id=1,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


#: Sizes shared by the tiny transformers on packed 2x2 latents (Flux, Chroma, Qwen-Image).
TINY_PACKED_TRANSFORMER = dict(
    in_channels=64,  # 16 latent channels x a 2x2 patch
    num_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,  # the text encoder's width
)
#: The tiny Flux-style transformer's sizes (Flux, Chroma): one double and one single block.
TINY_FLUX_BLOCKS = dict(
    **TINY_PACKED_TRANSFORMER, patch_size=1, num_single_layers=1, axes_dims_rope=(4, 4, 8)
)


def _flux_vae():
    """A 16-channel VAE with Flux's scale and shift (Flux, Chroma, Lumina 2, Z-Image, HiDream)."""
    return _vae(
        (8, 8, 8, 8), 1, 4, 64, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159
    )


def tiny_flow_pipeline(kind: str = "sd3", seed: int = 0):
    """A random tiny flow-matching pipeline: SD3 (``"sd3"``) or Flux (``"flux"``,
    ``"flux-schnell"``), built offline in a fraction of a second (about 100 k weights).

    SD3: ``StableDiffusion3Pipeline`` with two ``CLIPTextModelWithProjection`` (hidden 16), a
    T5 encoder (``d_model`` 32), an ``SD3Transformer2DModel`` (patch 2, one layer) and a
    16-channel VAE with SD3's scale and shift. Flux: ``FluxPipeline`` with a ``CLIPTextModel``
    (pooled), the T5, a ``FluxTransformer2DModel`` (one double and one single block, guidance
    embeddings for ``"flux"``) and a VAE with Flux's scale and shift. Images default to 64x64.

    Example:
        >>> pipe = tiny_flow_pipeline("flux")
        >>> type(pipe).__name__, pipe.transformer.config.guidance_embeds
        ('FluxPipeline', True)
    """
    from ._loading import quiet_loading

    with quiet_loading():
        from diffusers import (
            FlowMatchEulerDiscreteScheduler,
            FluxPipeline,
            FluxTransformer2DModel,
            SD3Transformer2DModel,
            StableDiffusion3Pipeline,
        )
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if kind not in ("sd3", "flux", "flux-schnell"):
        raise ValueError(
            f"tiny_flow_pipeline: kind must be 'sd3', 'flux' or 'flux-schnell', got {kind!r}"
        )
    torch.manual_seed(seed)
    if kind == "sd3":
        vae = _vae(
            (8, 8, 8, 8), 1, 4, 64, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609
        )
        transformer = SD3Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=32,  # the T5's width; the two CLIPs' 16 + 16 are padded to it
            caption_projection_dim=16,
            pooled_projection_dim=32,  # the two CLIPs' pooled 16 + 16
            pos_embed_max_size=16,
        ).eval()
        return StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=vae,
            text_encoder=CLIPTextModelWithProjection(_text_config(16, 16)).eval(),
            tokenizer=tiny_tokenizer(),
            text_encoder_2=CLIPTextModelWithProjection(_text_config(16, 16)).eval(),
            tokenizer_2=tiny_tokenizer(),
            text_encoder_3=_tiny_t5(32),
            tokenizer_3=tiny_tokenizer(),
        )
    transformer = FluxTransformer2DModel(
        **TINY_FLUX_BLOCKS, pooled_projection_dim=16, guidance_embeds=kind == "flux"
    ).eval()
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_flux_vae(),
        text_encoder=CLIPTextModel(_text_config(16)).eval(),
        tokenizer=tiny_tokenizer(),
        text_encoder_2=_tiny_t5(32),
        tokenizer_2=tiny_tokenizer(),
    )
    pipe.default_sample_size = 8  # 64x64 images (FluxPipeline's own default is 1024)
    return pipe


def tiny_chroma_pipeline(layers: tuple[int, int] = (1, 1)):
    """A ``ChromaPipeline``: a one-layer T5, a ``ChromaTransformer2DModel`` (``layers``: its
    double and single blocks, default one each; a one-layer approximator) and a Flux VAE;
    64x64 images by default.

    The approximator reads ComfyUI's 64 input channels (16 of timestep, 16 of guidance, 32 of
    modulation index: ``comfy/ldm/chroma/model.py`` hard-codes them). ComfyUI also hard-codes
    the 344 modulation rows of Chroma's 19 double and 38 single blocks and reads the final
    layer's from the end of those: a transformer that ComfyUI runs as diffusers does needs
    ``4 * double + single == 114``, e.g. ``layers=(28, 2)``.

    Example:
        >>> type(tiny_chroma_pipeline().transformer).__name__
        'ChromaTransformer2DModel'
    """
    from ._loading import quiet_loading

    with quiet_loading():
        from diffusers import (
            ChromaPipeline,
            ChromaTransformer2DModel,
            FlowMatchEulerDiscreteScheduler,
        )

    if len(layers) != 2 or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in layers
    ):
        raise ValueError(
            f"tiny_chroma_pipeline: layers must be (double, single) blocks, two ints >= 1, "
            f"got {layers!r}"
        )
    double, single = layers
    blocks = {**TINY_FLUX_BLOCKS, "num_layers": double, "num_single_layers": single}
    transformer = ChromaTransformer2DModel(
        **blocks,
        approximator_num_channels=64,
        approximator_hidden_dim=32,
        approximator_layers=1,
    ).eval()
    pipe = ChromaPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_flux_vae(),
        text_encoder=_tiny_t5(32),
        tokenizer=tiny_tokenizer(),
        transformer=transformer,
    )
    pipe.default_sample_size = 8  # 64x64 images (ChromaPipeline's own default is 1024)
    return pipe


#: A two-layer decoder-only text model over the offline byte vocabulary, 32 wide (the tiny
#: Gemma 2, Qwen3 and Qwen2.5-VL text encoders of Lumina 2, Z-Image and Qwen-Image).
TINY_DECODER_SIZES = dict(
    vocab_size=2 + 2 * 256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
)


def _tiny_decoder_config(config_class):
    """`TINY_DECODER_SIZES` as a ``config_class`` (``Gemma2Config``, ``Qwen3Config``)."""
    return config_class(**TINY_DECODER_SIZES, head_dim=16, max_position_embeddings=1024)


def tiny_lumina2_pipeline():
    """A ``Lumina2Pipeline``: a two-layer Gemma 2 over the byte vocabulary, a one-layer
    ``Lumina2Transformer2DModel`` and a Flux VAE; 64x64 images by default.

    Example:
        >>> tiny_lumina2_pipeline().default_image_size
        64
    """
    from ._loading import quiet_loading

    with quiet_loading():
        from diffusers import (
            FlowMatchEulerDiscreteScheduler,
            Lumina2Pipeline,
            Lumina2Transformer2DModel,
        )
        from transformers import Gemma2Config, Gemma2Model

    transformer = Lumina2Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        hidden_size=32,
        num_layers=1,
        num_refiner_layers=1,
        num_attention_heads=2,
        num_kv_heads=1,
        multiple_of=16,
        axes_dim_rope=(4, 6, 6),  # the heads' 16 channels
        cap_feat_dim=32,
    ).eval()
    return Lumina2Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_flux_vae(),
        text_encoder=Gemma2Model(_tiny_decoder_config(Gemma2Config)).eval(),
        tokenizer=tiny_tokenizer(256),
    )


#: A chat template of Qwen's shape for the byte tokenizer (Z-Image encodes prompts as chats).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_zimage_pipeline():
    """A ``ZImagePipeline``: a two-layer Qwen3 over the byte vocabulary (with a chat template),
    a one-layer ``ZImageTransformer2DModel`` and a Flux VAE; 64x64 images by default.

    Example:
        >>> type(tiny_zimage_pipeline().text_encoder).__name__
        'Qwen3Model'
    """
    from ._loading import quiet_loading

    with quiet_loading():
        from diffusers import (
            FlowMatchEulerDiscreteScheduler,
            ZImagePipeline,
            ZImageTransformer2DModel,
        )
        from transformers import Qwen3Config, Qwen3Model

    transformer = ZImageTransformer2DModel(
        in_channels=16,
        dim=32,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=32,
        axes_dims=[4, 6, 6],  # the heads' 16 channels
    ).eval()
    tokenizer = tiny_tokenizer(512)
    tokenizer.chat_template = CHAT_TEMPLATE
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_flux_vae(),
        text_encoder=Qwen3Model(_tiny_decoder_config(Qwen3Config)).eval(),
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.default_sample_size = 8  # 64x64 images (ZImagePipeline's own default is 1024)
    return pipe


def tiny_qwen_image_pipeline():
    """A ``QwenImagePipeline``: a two-layer Qwen2.5-VL over the byte vocabulary (a one-block
    vision tower it never uses), a one-layer ``QwenImageTransformer2DModel`` and a tiny
    ``AutoencoderKLQwenImage`` (Wan 2.1's video VAE, with Qwen-Image's per-channel mean and
    std); 64x64 images by default.

    Example:
        >>> tiny_qwen_image_pipeline().vae.config.z_dim
        16
    """
    from ._loading import quiet_loading

    with quiet_loading():
        from diffusers import (
            AutoencoderKLQwenImage,
            FlowMatchEulerDiscreteScheduler,
            QwenImagePipeline,
            QwenImageTransformer2DModel,
        )
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = Qwen2_5_VLConfig(
        text_config=dict(
            **TINY_DECODER_SIZES,
            max_position_embeddings=2048,
            rope_scaling={"type": "mrope", "mrope_section": [2, 2, 4]},  # the heads' 16 / 2
        ),
        vision_config=dict(
            depth=1,
            hidden_size=16,
            intermediate_size=32,
            num_heads=2,
            out_hidden_size=32,
            patch_size=2,
            spatial_merge_size=1,
            temporal_patch_size=1,
            fullatt_block_indexes=[0],
            window_size=8,
        ),
    )
    transformer = QwenImageTransformer2DModel(
        **TINY_PACKED_TRANSFORMER, patch_size=2, out_channels=16, axes_dims_rope=(4, 6, 6)
    ).eval()
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    tokenizer = tiny_tokenizer(1024)
    pipe = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae.eval(),
        text_encoder=Qwen2_5_VLForConditionalGeneration(text).eval(),
        tokenizer=tokenizer,
        transformer=transformer,
    )
    # The template's system part, which the encoding drops, is 34 tokens of Qwen's vocabulary
    # and more of the byte vocabulary: drop exactly it here too.
    system = pipe.prompt_template_encode.split("{}")[0].split("<|im_start|>user")[0]
    pipe.prompt_template_encode_start_idx = len(tokenizer(system).input_ids) - 1  # no end token
    pipe.default_sample_size = 8  # 64x64 images (QwenImagePipeline's own default is 1024)
    return pipe


def tiny_hidream_pipeline():
    """A ``HiDreamImagePipeline``: two CLIPs with projections (128 positions, as HiDream's
    long CLIPs read 128 tokens), a one-layer T5, a two-layer Llama over the byte vocabulary, a
    ``HiDreamImageTransformer2DModel`` with one double and one single block (two experts) and a
    Flux VAE; 64x64 images by default.

    Example:
        >>> tiny_hidream_pipeline().transformer.config.llama_layers
        [0, 1]
    """
    from ._loading import quiet_loading

    with quiet_loading():
        from diffusers import (
            FlowMatchEulerDiscreteScheduler,
            HiDreamImagePipeline,
            HiDreamImageTransformer2DModel,
        )
        from transformers import CLIPTextModelWithProjection, LlamaConfig, LlamaForCausalLM

    transformer = HiDreamImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        caption_channels=[32, 32],  # T5's and Llama's widths
        text_emb_dim=32,  # the two CLIPs' pooled 16 + 16
        num_routed_experts=2,
        num_activated_experts=1,
        axes_dims_rope=(4, 6, 6),  # the heads' 16 channels
        max_resolution=(16, 16),
        llama_layers=[0, 1],  # both of the tiny Llama's layers, one per block
    ).eval()
    clip = [CLIPTextModelWithProjection(_text_config(16, 16, positions=128)).eval() for _ in "12"]
    # eager attention: the pipeline asks Llama for its attention maps, which SDPA cannot give
    llama = LlamaForCausalLM(
        LlamaConfig(
            **TINY_DECODER_SIZES,
            head_dim=16,
            max_position_embeddings=1024,
            attn_implementation="eager",
        )
    )
    pipe = HiDreamImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_flux_vae(),
        text_encoder=clip[0],
        tokenizer=tiny_tokenizer(128),
        text_encoder_2=clip[1],
        tokenizer_2=tiny_tokenizer(128),
        text_encoder_3=_tiny_t5(32),
        tokenizer_3=tiny_tokenizer(128),
        text_encoder_4=llama.eval(),
        tokenizer_4=tiny_tokenizer(128),
        transformer=transformer,
    )
    pipe.default_sample_size = 8  # 64x64 images (HiDreamImagePipeline's own default is 1024)
    return pipe


def _tiny_flux2_transformer(cls, *, guidance_embeds: bool):
    """A ``Flux2Transformer2DModel`` with one double and one single block, reading three
    stacked layers of a 32-wide text encoder (Qwen3 for klein, Mistral 3 for dev)."""
    return cls(
        patch_size=1,
        in_channels=128,  # 32 latent channels x a 2x2 patch
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=96,  # three stacked layers of the 32-wide text encoder
        timestep_guidance_channels=16,
        axes_dims_rope=(4, 4, 4, 4),  # the heads' 16 channels over (t, h, w, l)
        guidance_embeds=guidance_embeds,
    ).eval()


def _tiny_flux2_vae(cls):
    """A tiny ``AutoencoderKLFlux2`` (32 latent channels) whose batch-norm statistics are random."""
    vae = cls(
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=32,
        norm_num_groups=4,
        sample_size=64,
    ).eval()
    # A trained VAE's statistics, not the identity: so that tests see the normalisation.
    vae.bn.running_mean.normal_(0, 0.5)
    vae.bn.running_var.uniform_(0.5, 2.0)
    return vae


def tiny_flux2_pipeline():
    """A ``Flux2KleinPipeline``: a 27-layer Qwen3 over the byte vocabulary (the pipeline stacks
    hidden layers 9, 18 and 27), a ``Flux2Transformer2DModel`` with one double and one single
    block (no guidance embedding, as klein) and a tiny ``AutoencoderKLFlux2`` whose batch-norm
    statistics are random; 64x64 images by default.

    Example:
        >>> tiny_flux2_pipeline().vae.config.latent_channels
        32
    """
    from ._loading import quiet_loading

    with quiet_loading():
        from diffusers import (
            AutoencoderKLFlux2,
            FlowMatchEulerDiscreteScheduler,
            Flux2KleinPipeline,
            Flux2Transformer2DModel,
        )
        from transformers import Qwen3Config, Qwen3ForCausalLM

    transformer = _tiny_flux2_transformer(Flux2Transformer2DModel, guidance_embeds=False)
    vae = _tiny_flux2_vae(AutoencoderKLFlux2)
    text = dict(TINY_DECODER_SIZES, num_hidden_layers=27)
    tokenizer = tiny_tokenizer(512)
    tokenizer.chat_template = CHAT_TEMPLATE
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=Qwen3ForCausalLM(
            Qwen3Config(**text, head_dim=16, max_position_embeddings=1024)
        ).eval(),
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.default_sample_size = 8  # 64x64 images (Flux2KleinPipeline's own default is 1024)
    return pipe


#: Flux.2 dev's chat template for the byte tokenizer: the system message, then the user's
#: turn, each message's content a list of ``{"type": "text", "text": ...}`` parts (Mistral 3's
#: shape, without its special tokens, which the byte vocabulary does not have).
MISTRAL_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}[SYSTEM_PROMPT]"
    "{% for part in m['content'] %}{{ part['text'] }}{% endfor %}[/SYSTEM_PROMPT]"
    "{% else %}[INST]{% for part in m['content'] %}{{ part['text'] }}{% endfor %}[/INST]"
    "{% endif %}{% endfor %}"
)


def tiny_flux2_dev_pipeline():
    """A ``Flux2Pipeline`` (Flux.2 dev): a ``Mistral3ForConditionalGeneration`` with a 30-layer
    32-wide Mistral over the byte vocabulary (the pipeline stacks hidden layers 10, 20 and 30)
    and a one-layer Pixtral vision tower it never uses, the pipeline's system message in a chat
    template, a ``Flux2Transformer2DModel`` with one double and one single block and a guidance
    embedding, and the tiny ``AutoencoderKLFlux2`` of `tiny_flux2_pipeline`; 64x64 images.

    Example:
        >>> pipe = tiny_flux2_dev_pipeline()
        >>> type(pipe).__name__, pipe.transformer.config.guidance_embeds
        ('Flux2Pipeline', True)
    """
    from ._loading import quiet_loading

    with quiet_loading():
        from diffusers import (
            AutoencoderKLFlux2,
            FlowMatchEulerDiscreteScheduler,
            Flux2Pipeline,
            Flux2Transformer2DModel,
        )
        from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    transformer = _tiny_flux2_transformer(Flux2Transformer2DModel, guidance_embeds=True)
    vae = _tiny_flux2_vae(AutoencoderKLFlux2)  # Flux.2's VAE, dev and klein alike
    config = Mistral3Config(
        text_config=dict(
            TINY_DECODER_SIZES,
            model_type="mistral",
            num_hidden_layers=30,
            head_dim=16,
            max_position_embeddings=1024,
        ),
        vision_config=dict(
            model_type="pixtral",
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            head_dim=8,
            patch_size=2,
            image_size=16,
        ),
    )
    tokenizer = tiny_tokenizer(512)
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    pipe = Flux2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=Mistral3ForConditionalGeneration(config).eval(),
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.default_sample_size = 8  # 64x64 images (Flux2Pipeline's own default is 1024)
    return pipe


#: `tiny_pipeline` kinds of the families added with their own builder.
FAMILY_BUILDERS = {
    "chroma": tiny_chroma_pipeline,
    "lumina2": tiny_lumina2_pipeline,
    "zimage": tiny_zimage_pipeline,
    "qwen-image": tiny_qwen_image_pipeline,
    "hidream": tiny_hidream_pipeline,
    "flux2": tiny_flux2_pipeline,
    "flux2-dev": tiny_flux2_dev_pipeline,
}


#: SD 1.5's UNet configuration (the published ``unet/config.json``), for full-size measurements.
SD15_UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=(
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)


def random_sd15_pipeline(seed: int = 0, device: str | torch.device = "cpu"):
    """A Stable Diffusion 1.5 sized pipeline with random weights, built offline.

    The UNet is SD 1.5's (860 M parameters, 4x64x64 latents for 512x512 images), so it costs
    what the real model costs: for measuring the GPU path where no hub can be reached. The VAE
    and text encoder are SD 1.5's sizes too; the tokenizer is the offline byte vocabulary. The
    pictures are noise. About 4 GB in float32: build it on the device that will run it.

    Example:
        >>> from seqwidgets.testing import SD15_UNET_CONFIG
        >>> from diffusers import UNet2DConditionModel
        >>> with torch.device("meta"):
        ...     unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        >>> round(sum(p.numel() for p in unet.parameters()) / 1e6)
        860
    """
    from ._loading import quiet_loading

    with quiet_loading():
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG).eval()
        vae = _vae((128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, size=512)
        text_encoder = CLIPTextModel(_text_config(768, layers=12, heads=12)).eval()
    return _sd_pipeline(vae, text_encoder, unet)


#: An SD3-medium-size MMDiT (SD3.5 medium's layout: 24 layers of 24 heads of 64, dual attention
#: in the first 13, RMS q/k norm; 2.2 B parameters), for measuring the flow path on a GPU.
SD3_MEDIUM_TRANSFORMER_CONFIG = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    pos_embed_max_size=384,
    dual_attention_layers=tuple(range(13)),
    qk_norm="rms_norm",
)


def random_sd3_pipeline(seed: int = 0, device: str | torch.device = "cpu"):
    """An SD3-size pipeline with random weights, built offline: to measure a GPU on the flow path.

    The transformer is `SD3_MEDIUM_TRANSFORMER_CONFIG` (2.2 B parameters, 16x128x128 latents for
    1024x1024 images) and the VAE has SD3's sizes, so a step costs what SD3.5 medium's costs.
    The two CLIP text encoders have SD3's widths (768 and 1280, pooled 2048) but one layer each,
    and there is no T5 (diffusers then conditions on zeros in its place): prompts are encoded
    once per run, so they barely count in a measurement. The pictures are noise. About 9 GB in
    float32: build it on the device that will run it.

    Example:
        >>> from diffusers import SD3Transformer2DModel
        >>> with torch.device("meta"):
        ...     transformer = SD3Transformer2DModel(**SD3_MEDIUM_TRANSFORMER_CONFIG)
        >>> round(sum(p.numel() for p in transformer.parameters()) / 1e9, 2)
        2.24
    """
    from ._loading import quiet_loading

    with quiet_loading():
        from diffusers import (
            FlowMatchEulerDiscreteScheduler,
            SD3Transformer2DModel,
            StableDiffusion3Pipeline,
        )
        from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    with torch.device(device):
        transformer = SD3Transformer2DModel(**SD3_MEDIUM_TRANSFORMER_CONFIG).eval()
        vae = _vae(
            (128, 256, 512, 512),
            layers_per_block=2,
            norm_num_groups=32,
            size=1024,
            latent_channels=16,
            scaling_factor=1.5305,
            shift_factor=0.0609,
        )
        clip_l = CLIPTextModelWithProjection(_text_config(768, 768, layers=1, heads=12)).eval()
        clip_g = CLIPTextModelWithProjection(_text_config(1280, 1280, layers=1, heads=20)).eval()
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=clip_l,
        tokenizer=tiny_tokenizer(),
        text_encoder_2=clip_g,
        tokenizer_2=tiny_tokenizer(),
        text_encoder_3=None,
        tokenizer_3=None,
    )

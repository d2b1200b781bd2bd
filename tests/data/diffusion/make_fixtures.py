#!/usr/bin/env python3
"""Writes the tensor-name fixtures of the diffusion layer rules (tests/data/diffusion/*.json).

Each fixture is the state dict of a small, randomly initialised model built by diffusers (or
transformers, for the text encoders) from a configuration of the real architecture, reduced in
width and depth only: the tensor names and the number of dimensions are exactly those of the
full-size model. Every entry records the name, the shape and the dtype. Run with the pinned
torch, diffusers and transformers of requirements-test.txt:

    .venv/bin/python tests/data/diffusion/make_fixtures.py
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def unet2d():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def unet2d_condition():
    from diffusers import UNet2DConditionModel

    # Stable Diffusion's block layout, narrowed; SDXL-style added conditioning included so that
    # add_embedding names appear too.
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=24,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24 + 6 * 8)


def dit():
    from diffusers import Transformer2DModel

    # DiT: patch embedding, adaLN-Zero blocks conditioned on timestep and class label.
    return Transformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
        num_layers=2, sample_size=8, patch_size=2, norm_type="ada_norm_zero",
        num_embeds_ada_norm=10, norm_elementwise_affine=False)


def pixart():
    from diffusers import PixArtTransformer2DModel

    return PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
        num_layers=2, sample_size=8, patch_size=2, cross_attention_dim=16,
        caption_channels=24)


def sd3():
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=24, caption_projection_dim=16,
        pooled_projection_dim=20, out_channels=4, pos_embed_max_size=16)


def flux():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=20,
        guidance_embeds=True, axes_dims_rope=(4, 4, 8))


def vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"))


def clip_text():
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=16))


def t5_encoder():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=100, d_model=16, d_ff=32, d_kv=8, num_layers=2, num_heads=2,
        relative_attention_num_buckets=8))


MODELS = {
    "unet2d": ("UNet2DModel", unet2d),
    "unet2d_condition": ("UNet2DConditionModel", unet2d_condition),
    "dit": ("Transformer2DModel", dit),
    "pixart": ("PixArtTransformer2DModel", pixart),
    "sd3": ("SD3Transformer2DModel", sd3),
    "flux": ("FluxTransformer2DModel", flux),
    "vae": ("AutoencoderKL", vae),
    "clip_text": ("CLIPTextModelWithProjection", clip_text),
    "t5_encoder": ("T5EncoderModel", t5_encoder),
}

DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
          torch.float64: "f64"}


def main():
    import diffusers
    import transformers

    torch.manual_seed(0)
    for key, (cls, build) in MODELS.items():
        model = build()
        tensors = [{"name": name, "shape": list(t.shape), "dtype": DTYPES[t.dtype]}
                   for name, t in model.state_dict().items()]
        doc = {"class": cls, "generator": "tests/data/diffusion/make_fixtures.py",
               "torch": torch.__version__.split("+")[0], "diffusers": diffusers.__version__,
               "transformers": transformers.__version__, "tensors": tensors}
        path = os.path.join(HERE, key + ".json")
        with open(path, "w") as f:
            json.dump(doc, f, indent=0)
            f.write("\n")
        print(f"{path}: {len(tensors)} tensors", file=sys.stderr)


if __name__ == "__main__":
    main()

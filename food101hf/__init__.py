"""food101hf: fine-tune timm's ResNet-18 on Food-101 (or your own food photos) with the Hugging Face stack."""

__version__ = "0.1.0"

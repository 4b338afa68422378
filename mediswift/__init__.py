"""MediSwift: sparse pre-training and dense soft-prompt fine-tuning of biomedical GPT models."""

__version__ = "0.1.0"

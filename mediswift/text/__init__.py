"""Text layer: Moses pre-tokenization, BPE vocabulary learning, the Tokenizer, token shards."""

"""Data layer: download, parse, filter and shard the biomedical corpus."""

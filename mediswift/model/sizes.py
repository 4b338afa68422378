"""Named model sizes: Table 5 of the paper (med, large, xl) plus small sizes for CPU and tests.

Every size uses d_ff = 4 * d_model and a context of 1024 tokens (Appendix A.1); only the depth,
width and head layout change. `d_model == n_head * d_head` for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    n_layer: int
    d_model: int
    n_head: int

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head


SIZES: dict[str, Size] = {
    # CPU sizes: "tiny" trains the demo in minutes on 2 cores; "small" is the benchmark shape.
    # micro, tiny, mini and deep share width 128 and double the depth each: dense micro, tiny at
    # 50% and mini at 75% have equal active non-embedding parameters (196,608 in the matrices),
    # as do dense tiny and deep at 75%: the paper's pairing (XL at 75% against Med dense) at
    # CPU scale, the ladders of the repro-claims recipes. A 1-layer model forms no induction
    # heads; the second ladder (tiny against deep) has no 1-layer model.
    "micro": Size(n_layer=1, d_model=128, n_head=4),
    "tiny": Size(n_layer=2, d_model=128, n_head=4),
    "mini": Size(n_layer=4, d_model=128, n_head=4),
    "deep": Size(n_layer=8, d_model=128, n_head=4),
    "small": Size(n_layer=4, d_model=256, n_head=4),
    # Table 5: MediSwift-Med (302M), -Large (510M), -XL (1.21B) non-embedding parameters.
    "med": Size(n_layer=24, d_model=1024, n_head=16),
    "large": Size(n_layer=18, d_model=1536, n_head=12),
    "xl": Size(n_layer=24, d_model=2048, n_head=16),
}

# Table 5's n_params: the non-embedding parameter count of each paper size.
PAPER_NON_EMBEDDING_PARAMS: dict[str, float] = {"med": 302e6, "large": 510e6, "xl": 1.21e9}


def size(name: str) -> Size:
    try:
        return SIZES[name]
    except KeyError:
        raise ValueError(f"unknown model size {name!r}; known: {', '.join(SIZES)}") from None

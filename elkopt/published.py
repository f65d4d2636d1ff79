"""The published Elk results elkopt measures itself against (spec section 7)."""

from __future__ import annotations

#: Per-token latency (ms) per published scheduler, batch 32, KV 2048, 5888 cores, 16 TB/s
#: HBM, all-to-all (published Fig. 17).
PUBLISHED_MS: dict[str, dict[str, float]] = {
    "llama2_13b": {"basic": 12.50, "static": 9.21, "elk_dyn": 8.27, "elk_full": 6.72, "ideal": 6.70},
    "gemma2_27b": {"basic": 12.65, "static": 9.70, "elk_dyn": 8.61, "elk_full": 7.24, "ideal": 7.22},
    "opt_30b": {"basic": 22.86, "static": 16.65, "elk_dyn": 14.97, "elk_full": 12.72, "ideal": 11.80},
    "llama2_70b": {"basic": 26.51, "static": 20.38, "elk_dyn": 18.03, "elk_full": 14.96, "ideal": 14.43},
}
#: (batch, KV length) of PUBLISHED_MS.
PUBLISHED_CONFIG = (32, 2048)
#: Averages over 4 models x batch {16, 32, 64} x KV {2048, 4096}: Elk-Full's share of
#: Ideal (%) and its speed-ups over Basic and Static.
PUBLISHED_SUMMARY = {"pct_of_ideal": 94.84, "speedup_vs_basic": 1.87, "speedup_vs_static": 1.37}

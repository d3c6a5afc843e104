"""Write a Qwen2.5-VL checkpoint with the 7B (or 3B) *shape* and random weights, reusing the processor
(tokenizer, image processor, chat template) of a local checkpoint such as the tiny default.

For GPU benchmarks of the training recipes where no real weights are available:
    python benchmarks/make_shaped_checkpoint.py --processor-from outputs/models/tiny-qwen2_5_vl --out /tmp/qwen7b --shape 7b
    python benchmarks/make_shaped_checkpoint.py ... --shape tiny-test      # a small shape, for a CPU check of this script
"""

from __future__ import annotations

import argparse
import time

import torch

SHAPES = {
    # Qwen2.5-VL-7B-Instruct: 8.29 B parameters (ViT 0.68 B + LM 7.62 B)
    "7b": dict(text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                         vocab_size=152064, mrope=[16, 24, 24]),
               vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           fullatt_block_indexes=[7, 15, 23, 31], window_size=112)),
    # Qwen2.5-VL-3B-Instruct: 3.75 B parameters (same ViT, LM 2048 wide x 36 layers; untied head here)
    "3b": dict(text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                         vocab_size=151936, mrope=[16, 24, 24]),
               vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                           fullatt_block_indexes=[7, 15, 23, 31], window_size=112)),
    "tiny-test": dict(text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                vocab_size=2048, mrope=[2, 3, 3]),
                      vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
                                  fullatt_block_indexes=[1], window_size=56)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processor-from", required=True, help="checkpoint whose processor/tokenizer is reused")
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    t0 = time.time()
    shape = SHAPES[args.shape]
    cfg = AutoConfig.from_pretrained(args.processor_from)
    t = shape["text"]
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        setattr(cfg.text_config, k, t[k])
    rope = dict(cfg.text_config.rope_parameters or {})
    rope["mrope_section"] = t["mrope"]
    cfg.text_config.rope_parameters = rope
    cfg.text_config.layer_types = ["full_attention"] * t["num_hidden_layers"]
    for k, v in shape["vision"].items():
        setattr(cfg.vision_config, k, v)
    cfg.tie_word_embeddings = False
    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForImageTextToText.from_config(cfg, dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(args.out)
    AutoProcessor.from_pretrained(args.processor_from).save_pretrained(args.out)
    print(f"wrote {args.out}: {n / 1e9:.3f} B parameters ({args.shape}) in {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()

"""Stage 1: cold-start SFT. All knobs live in configs/sft.yaml; override any with key=value.

    python scripts/train_sft.py                                   # tiny default, CPU: the tiny56 curriculum, ~39 min
    python scripts/train_sft.py curriculum=none trainer.max_steps=20 run_dir=outputs/sft/quick   # one phase
    accelerate launch --num_processes 8 scripts/train_sft.py model=qwen2_5_vl_7b curriculum=none deepspeed=zero3 run_dir=outputs/sft/7b
"""

import hydra

from preferthinker.runtime import register_resolvers, run_entry

register_resolvers()


@hydra.main(config_path="../configs", config_name="sft", version_base="1.3")
def main(cfg) -> None:
    from preferthinker.train.sft import run

    run_entry(run, cfg)


if __name__ == "__main__":
    main()

"""Stage 2: GRPO. All knobs live in configs/grpo.yaml; override any with key=value.

    python scripts/train_grpo.py                                   # tiny default: continues the newest SFT run
    python scripts/train_grpo.py trainer.max_steps=20 run_dir=outputs/grpo/quick
    accelerate launch --num_processes 8 scripts/train_grpo.py model=qwen2_5_vl_7b deepspeed=zero3 model.path=outputs/sft/7b/final run_dir=outputs/grpo/7b
"""

import hydra

from preferthinker.runtime import register_resolvers, run_entry

register_resolvers()


@hydra.main(config_path="../configs", config_name="grpo", version_base="1.3")
def main(cfg) -> None:
    from preferthinker.train.grpo import run

    run_entry(run, cfg)


if __name__ == "__main__":
    main()

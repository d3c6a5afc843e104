"""Evaluation. All knobs live in configs/eval.yaml; override any with key=value.

    python scripts/eval.py                                        # newest tiny checkpoint, synthetic splits
    python scripts/eval.py model.path=outputs/sft/<run>/final bench.max_samples=50
    accelerate launch --num_processes 8 scripts/eval.py model.path=/ckpt/PreferThinker bench.root=data/PreferImg-Bench run_dir=outputs/eval/7b
"""

import hydra

from preferthinker.runtime import register_resolvers, run_entry

register_resolvers()


@hydra.main(config_path="../configs", config_name="eval", version_base="1.3")
def main(cfg) -> None:
    from preferthinker.evaluation.run import run

    run_entry(run, cfg)


if __name__ == "__main__":
    main()

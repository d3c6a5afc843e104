"""Make the synthetic PreferImg data (bench splits + SFT/GRPO training files). Knobs: configs/make_data.yaml.

    python scripts/make_data.py                                   # embedded default into data/synthetic
    python scripts/make_data.py users.train_sft=200 out_dir=data/tiny workers=2
    python scripts/make_data.py image_size=224 verbosity=rich     # for real Qwen2.5-VL checkpoints
"""

import json
import logging

import hydra

from preferthinker.runtime import ConfigError, register_resolvers, run_entry

register_resolvers()


def run(cfg):
    from preferthinker.data.synthetic.splits import DataConfigError, make_dataset

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        stats = make_dataset(cfg)
    except DataConfigError as e:
        raise ConfigError(str(e)) from None
    summary = {k: {"users": v["users"], "images": v["images"], "labels": v["labels"]} for k, v in stats.items() if k != "timing"}
    print(json.dumps({"out_dir": str(cfg.out_dir), "splits": summary, "timing": stats["timing"]}, indent=2))
    return stats


@hydra.main(config_path="../configs", config_name="make_data", version_base="1.3")
def main(cfg) -> None:
    run_entry(run, cfg)


if __name__ == "__main__":
    main()

"""The main job on the embedded default, end to end, with the ablation table at the end.

    python scripts/run_pipeline.py
    python scripts/run_pipeline.py stages=[eval] run_dir=outputs/pipeline/<earlier run>   # re-evaluate

Each stage runs as its own process (exactly the command a user would type) and writes under run_dir.
"""

import hydra

from preferthinker.runtime import register_resolvers, run_entry

register_resolvers()


@hydra.main(config_path="../configs", config_name="pipeline", version_base="1.3")
def main(cfg) -> None:
    from preferthinker.pipeline import run

    run_entry(run, cfg)


if __name__ == "__main__":
    main()

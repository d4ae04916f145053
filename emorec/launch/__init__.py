"""Running jobs: one Ray Train job (ray_train), sweeps of them (sweep, sweep_config), the Ray Job API
(ray_jobs), Slurm (slurm) and the quickstart, all through one code path."""

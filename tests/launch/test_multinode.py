"""A 2-worker job spread over 2 Ray nodes on this machine (STRICT_SPREAD) trains and checkpoints to S3."""

import json

import pytest
from conftest import make_bucket, write_config

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def two_node_cluster(s3_endpoint):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    ray.init(address=cluster.address, _node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_job_spread_over_two_nodes_trains_and_checkpoints_to_s3(two_node_cluster, s3_endpoint, tmp_path, fixtures_dir):
    import ray

    from emorec.config import load_config
    from emorec.launch.ray_train import run_job

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    fs = make_bucket("emorec-multinode")
    path = write_config(tmp_path / "c.yaml", fixtures_dir, "carer", "lora", output="s3://emorec-multinode/run",
                        train={"max_steps": 4, "save_every": 2, "micro_batch_size": 4, "grad_accum": 1},
                        data={"max_eval_samples": 8},
                        ray={"workers": 2, "cpus_per_worker": 1, "placement_strategy": "STRICT_SPREAD",
                             "max_failures": 0})
    metrics = run_job(load_config(str(path)))
    assert metrics["world_size"] == 2 and metrics["steps"] == 4
    manifest = json.loads(fs.cat("emorec-multinode/run/checkpoints/step-0000004/MANIFEST.json"))
    assert any("zero_pp_rank_1_" in name for name in manifest["files"])
    assert fs.exists("emorec-multinode/run/adapter/adapter_model.safetensors")

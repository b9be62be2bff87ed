"""Techno OS backend: the runbook's stack on Debian 12 hosts, by role (inventory groups edge, db,
api, backup; one host may hold several).

pyinfra inventories/prod.py deploy.py      production
pyinfra inventories/local.py deploy.py     the local sandbox (make deploy)
pyinfra inventories/cluster.py deploy.py   the cluster sandbox (make up-cluster)
"""

from tasks.alertmanager import alertmanager
from tasks.backup import backup_and_cron
from tasks.base import base_system
from tasks.database import database
from tasks.docker import docker_engine
from tasks.environment import environment_file
from tasks.firewall import firewall
from tasks.images import load_images
from tasks.node_exporter import node_exporter
from tasks.pgbackrest import offsite_backups, offsite_stanza
from tasks.prometheus import standalone_prometheus
from tasks.proxy import reverse_proxy
from tasks.release import api_release, release_tool
from tasks.sandbox_key import sandbox_key
from tasks.standin import llm_standin
from tasks.validate import validate_inputs

validate_inputs()
base_system()
firewall()
node_exporter()
docker_engine()
images = load_images()
env = environment_file()
backup_and_cron()
offsite_backups()
database(stack_inputs=images["db"])
offsite_stanza()
llm_standin()
tool = release_tool()
reverse_proxy()
api_release(inputs=[*images["api"], *env, *tool])
standalone_prometheus()
alertmanager()
sandbox_key()

"""Techno OS backend: the runbook's stack on Debian 12 hosts, by role (inventory groups edge, db,
api, backup; one host may hold several).

pyinfra inventories/prod.py deploy.py      production
pyinfra inventories/local.py deploy.py     the local sandbox (make deploy)
pyinfra inventories/cluster.py deploy.py   the cluster sandbox (make up-cluster)
"""

from tasks.alertmanager import alertmanager
from tasks.backup import backup_and_cron
from tasks.balancer import load_balancer
from tasks.base import base_system
from tasks.blackbox_exporter import blackbox_exporter
from tasks.dashboards import dashboards
from tasks.database import database
from tasks.docker import docker_engine
from tasks.environment import environment_file
from tasks.firewall import firewall
from tasks.images import load_images
from tasks.node_exporter import node_exporter
from tasks.pgbackrest import offsite_backups, offsite_stanza
from tasks.postgres_exporter import postgres_exporter
from tasks.prometheus import standalone_prometheus
from tasks.proxy import reverse_proxy
from tasks.release import api_release, release_tool
from tasks.sandbox_key import sandbox_key
from tasks.standin import llm_standin
from tasks.topology import every_host_reaches
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
postgres_exporter()
every_host_reaches("the database is up, configured, with the current password")
llm_standin()
tool = release_tool()
reverse_proxy()
load_balancer()
api_release(inputs=[*images["api"], *env, *tool])
every_host_reaches("the API is released")
offsite_stanza()  # after the first release: the first verified backup holds the schema
blackbox_exporter()
standalone_prometheus()
dashboards()
alertmanager()
sandbox_key()

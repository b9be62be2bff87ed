"""Techno OS backend: the runbook's stack on a Debian 12 host.

pyinfra inventories/prod.py deploy.py     production
pyinfra inventories/local.py deploy.py    the local VM (make deploy)
"""

from tasks.alertmanager import alertmanager
from tasks.backup import backup_and_cron
from tasks.base import base_system
from tasks.docker import docker_engine
from tasks.environment import environment_file
from tasks.images import build_images
from tasks.node_exporter import node_exporter
from tasks.prometheus import standalone_prometheus
from tasks.proxy import reverse_proxy
from tasks.stack import compose_stack
from tasks.validate import validate_inputs

validate_inputs()
base_system()
docker_engine()
images = build_images()
env = environment_file()
compose_stack(inputs_changed=[*images, env])
standalone_prometheus()
node_exporter()
alertmanager()
reverse_proxy()
backup_and_cron()

from pyinfra import config
from pyinfra.api import DeployError, deploy

from tasks import inputs


@deploy("Validate the deploy's inputs before any change")
def validate_inputs() -> None:
    # Raised while operations are being planned, so nothing has touched any host yet.
    if config.DIFF:
        raise DeployError("--diff would print the .env (secrets) into the log: run without it")
    inputs.check_host_data()
    inputs.check_providers()
    inputs.secrets()
    inputs.artifact()
    inputs.check_prometheus_config()
    inputs.check_alerting()
    inputs.check_proxy()

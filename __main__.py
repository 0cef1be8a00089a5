"""The stack's program: read the stack config, build the cluster, export what clients need."""

import pulumi

from nats_fly import NatsCluster, SettingsError
from nats_fly.stack import stack_args

# The Python host's "already shown to the user" exit status (a RunError would end with "an unhandled
# error occurred: Program exited with non-zero exit code: 1").
SHOWN = 32


try:
    cluster = NatsCluster("nats", stack_args())
except SettingsError as error:
    for problem in error.problems:
        pulumi.log.error(problem)
    raise SystemExit(SHOWN) from None

pulumi.export("app", cluster.app_name)
pulumi.export("hostname", cluster.hostname)
pulumi.export("clientUrl", cluster.client_url)
pulumi.export("tlsUrl", cluster.tls_url)
pulumi.export("websocketUrl", cluster.websocket_url)
pulumi.export("leafUrl", cluster.leaf_url)
pulumi.export("leafRemotes", cluster.leaf_remotes)
pulumi.export("clientUrls", cluster.client_urls)
pulumi.export("serverUrls", cluster.server_urls)
pulumi.export("machines", cluster.machines)
pulumi.export("imageHash", cluster.image_hash)
pulumi.export("natsConf", cluster.nats_conf)
pulumi.export("howToConnect", cluster.how_to_connect)

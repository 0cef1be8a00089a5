"""The nats-fly component package's entry point: the CLI starts it (through the Python language host's
RunPlugin) and talks to it as a provider of nats-fly:index:NatsCluster."""

from nats_fly.provider import main

if __name__ == "__main__":
    main()

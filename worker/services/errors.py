"""What a service refuses, in French, for agents (CLI and API show the message as is)."""


class ServiceError(Exception):
    """A request that cannot be carried out: message in French, for agents."""

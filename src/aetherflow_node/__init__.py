"""The embeddable AetherFlow node runtime and the ``aetherflow`` command."""

__all__: list[str] = []

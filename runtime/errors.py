"""The runtime's own error types. All derive from ValueError so callers can catch broadly."""


class VlmforgeError(ValueError):
    """Base class: a user-facing problem with a message that says what to do."""


class ManifestError(VlmforgeError):
    """The exported folder is invalid, stale or modified."""


class PromptError(VlmforgeError):
    """The prompt and the images do not fit together (placeholders, context length …)."""


class ImageError(VlmforgeError):
    """An image cannot be read or is not a picture we can use."""

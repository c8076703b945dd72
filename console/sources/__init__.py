"""Where records come from. A source knows nothing of checkpoints or the UI."""

from console.sources.base import (
    CredentialsError,
    EndpointUnreachableError,
    ExpiredIteratorError,
    FatalSourceError,
    RetryableError,
    SourceError,
    StreamInfo,
    StreamNotFoundError,
    StreamSource,
    TrimmedDataError,
)

__all__ = [
    "CredentialsError",
    "EndpointUnreachableError",
    "ExpiredIteratorError",
    "FatalSourceError",
    "RetryableError",
    "SourceError",
    "StreamInfo",
    "StreamNotFoundError",
    "StreamSource",
    "TrimmedDataError",
]

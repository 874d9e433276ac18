"""The lattice wire protocol, free of I/O.

Everything that crosses NATS is named and shaped here: subjects, the control reply
envelope, control request models, CloudEvents, and the invocation error reply. The
host, the CLI client and (later) the controller import these and never redefine a
message. This package imports nothing else of ours except the value codec.
"""

from lattice.protocol import envelope, events, invocation, messages, subjects

__all__ = ["envelope", "events", "invocation", "messages", "subjects"]

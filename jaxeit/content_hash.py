"""Equality and hashing by content for immutable containers of read-only arrays (meshes, protocols).

A :class:`~jaxeit.forward.ForwardModel` carries its mesh and protocol as static
pytree data, so ``jax.jit`` looks compiled programs up by their hash and
equality. With identity semantics every newly built but identical protocol
(one per loaded data set, say) compiled everything again; with content
semantics equal geometry reuses the compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np

__all__ = ["ContentHashed"]


class ContentHashed:
    """Mixin for frozen dataclasses whose fields are read-only numpy arrays or plain scalars.

    ``a == b`` when both are the same type and every field has the same dtype,
    shape and bytes (or the same scalar value); ``hash`` agrees. The digest is
    computed once per object (BLAKE2b over the fields).
    """

    @functools.cached_property
    def content_digest(self) -> bytes:
        """BLAKE2b digest (16 bytes) of the type name and every field's dtype, shape and bytes."""
        h = hashlib.blake2b(type(self).__qualname__.encode(), digest_size=16)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            h.update(field.name.encode())
            if isinstance(value, np.ndarray):
                h.update(f"{value.dtype.str}{value.shape}".encode())
                h.update(np.ascontiguousarray(value).tobytes())
            else:
                h.update(repr(value).encode())
        return h.digest()

    def __eq__(self, other):
        if self is other:
            return True
        if type(other) is not type(self):
            return NotImplemented
        return self.content_digest == other.content_digest

    def __hash__(self):
        return hash(self.content_digest)

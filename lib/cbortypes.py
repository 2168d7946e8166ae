"""The Python types CBOR items map to beyond the built-in ones, shared by the
encoder (cborenc) and the decoder (cbordec), and the nesting limit both keep.
Everyone else reaches them as cbor.Tag, cbor.Map, cbor.MAX_DEPTH.
"""

MAX_DEPTH = 16  # arrays, maps and tags nested deeper are refused both ways


class Tag:
    """A tagged item: Tag(17, [...]) for COSE_Mac0."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


class Map:
    """A map to encode with its keys in exactly this order: Map([(1, 5), (4, b"id")])."""

    def __init__(self, pairs):
        self.pairs = list(pairs)

"""Key -> node bindings read from the database, answered from memory while they hold.

Every signed Fleet call checks that its key is bound to the node it names: a read per
call, as many as the calls themselves. A binding is written once, when its node is
created, and ends only when that node is deleted (``delete_node``, or a rejoin displacing
an offline holder), in whichever process. So a binding read once stays true until a
deletion, and every deletion sends a ``node`` notice in its transaction (``notices``).

The bindings kept are trusted only while this process listens for notices: from the
moment its LISTEN is in place until that connection is lost. Each change of that state,
and each deletion heard or made here, forgets them all (deletions are rare; a forgotten
binding costs one read). A read that was under way when a deletion was heard may have
seen the node before it went: ``keep`` refuses it (``generation``).
"""

from __future__ import annotations


class KeyBindings:
    """The bindings confirmed by the database since the last deletion this process heard."""

    def __init__(self) -> None:
        self._nodes: dict[bytes, int] = {}
        self._trusted = False
        #: Bumped whenever what was read before may be stale.
        self._generation = 0

    @property
    def generation(self) -> int:
        """Take it before a read; hand it to ``keep`` with what the read found."""
        return self._generation

    def holds(self, public_key: bytes, node_id: int) -> bool:
        """True only if the database bound the key to the node and no deletion came since."""
        return self._trusted and self._nodes.get(public_key) == node_id

    def keep(self, public_key: bytes, node_id: int, generation: int) -> None:
        """Keep a binding the database confirmed by a read begun at ``generation``."""
        if self._trusted and generation == self._generation:
            self._nodes[public_key] = node_id

    def forget(self) -> None:
        """A node was deleted, here or in another process: every binding is read again."""
        self._nodes.clear()
        self._generation += 1

    def listening(self, heard: bool) -> None:
        """Notices are heard from now on (``heard``), or may be missed from now on."""
        self.forget()
        self._trusted = heard
